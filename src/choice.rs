//! Settings with a fixed set of values, each spelled one way by flags, messages and callers:
//! one table of names per type, and one parser, error and `FromStr`/`Display` for them all.
//!
//! The command line parses these through `FromStr`; the library does not depend on clap, whose
//! `ValueEnum` would do the same but put a command-line parser's trait into the library's
//! types.

/// A setting with a fixed set of values, each with one name.
pub trait Choice: Copy + 'static {
    /// What it chooses, as messages say it: `optimizer`.
    const KIND: &'static str;
    /// Every value, in the order messages list them.
    const ALL: &'static [Self];

    /// Its name: `adamw`.
    fn name(self) -> &'static str;

    /// The value named `name`.
    fn from_name(name: &str) -> Result<Self, UnknownChoice> {
        Self::ALL
            .iter()
            .copied()
            .find(|value| value.name() == name)
            .ok_or_else(|| UnknownChoice {
                kind: Self::KIND,
                given: name.to_string(),
                names: Self::ALL.iter().map(|value| value.name()).collect(),
            })
    }
}

/// A name that is none of a setting's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} '{given}': expected {}", alternatives(names))]
pub struct UnknownChoice {
    pub kind: &'static str,
    pub given: String,
    /// The names there are.
    pub names: Vec<&'static str>,
}

/// `a, b or c`.
fn alternatives(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [only] => only.to_string(),
        [first @ .., last] => format!("{} or {last}", first.join(", ")),
    }
}

/// `FromStr` and `Display` through a [`Choice`]'s names.
macro_rules! by_name {
    ($($choice:ty),+ $(,)?) => {$(
        impl std::str::FromStr for $choice {
            type Err = UnknownChoice;

            fn from_str(name: &str) -> Result<Self, Self::Err> {
                <Self as Choice>::from_name(name)
            }
        }

        impl std::fmt::Display for $choice {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(Choice::name(*self))
            }
        }
    )+};
}

by_name!(
    crate::data::DatasetName,
    crate::device::DeviceChoice,
    crate::model::ModelKind,
    crate::model::Activation,
    crate::train::OptimizerKind,
    crate::train::EngineChoice,
    crate::train::Preset,
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::OptimizerKind;

    #[test]
    fn every_value_is_read_back_from_its_name_and_others_are_refused_with_the_list() {
        for &kind in OptimizerKind::ALL {
            assert_eq!(kind.to_string().parse::<OptimizerKind>(), Ok(kind));
        }
        let err = "adagrad".parse::<OptimizerKind>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown optimizer 'adagrad': expected adam, adamw or sgd"
        );
        assert_eq!(
            "cifar"
                .parse::<crate::data::DatasetName>()
                .unwrap_err()
                .to_string(),
            "unknown dataset 'cifar': expected mnist, fashion-mnist or mnist-lite"
        );
    }
}
