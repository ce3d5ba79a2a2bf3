//! Loading a run's files: config.json and model.safetensors, any bytes.
#![no_main]

use burn::tensor::Device;
use digits::model::{Model, ModelConfig, weights};
use digits::run::RunConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    // The first byte chooses what the rest is: a run config, or weights for each model kind.
    let Some((&choice, rest)) = bytes.split_first() else {
        return;
    };
    if choice % 2 == 0 {
        if let Ok(config) = serde_json::from_slice::<RunConfig>(rest) {
            // A parsed config builds its model or refuses with an error, never a panic.
            let weights = config.model.initial_weights(0);
            let _ = Model::from_weights(&config.model, weights, &Device::flex());
        }
        return;
    }
    let Ok(loaded) = weights::from_safetensors_bytes(rest, "", "fuzz") else {
        return;
    };
    let kinds = ["mlp", "mlp-large", "lenet5", "cnn"];
    let kind: digits::model::ModelKind = kinds[usize::from(choice / 2) % kinds.len()]
        .parse()
        .unwrap();
    let config: ModelConfig = kind.config();
    let _ = Model::from_weights(&config, loaded, &Device::flex());
});
