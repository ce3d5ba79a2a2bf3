//! Reports and comparisons for real short runs: the pictures decode at their sizes and the
//! page embeds everything it shows.

mod common;

use burn::tensor::Device;
use common::{assert_clean_failure, digits, stderr, stdout};
use digits::data::{Dataset, Split};
use digits::eval;
use digits::report::{self, ReportInputs, charts};
use digits::run::RunDir;

fn dimensions(path: &std::path::Path) -> (u32, u32) {
    let image = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (image.width(), image.height())
}

#[test]
fn a_report_has_every_chart_at_its_size_and_a_self_contained_page() {
    let train_set = Dataset::lite(Split::Train).truncated(1_600);
    let test_set = Dataset::lite(Split::Test).truncated(1_000);
    let dir = tempfile::tempdir().unwrap();
    common::train_saved_run(&dir.path().join("run"), &train_set, &test_set, 2);

    let run = RunDir::open(&dir.path().join("run")).unwrap();
    let (config, model) = run.load_model(&Device::flex()).unwrap();
    let history = run.metrics().unwrap();
    let evaluation = eval::evaluate(&model, &test_set, 32);
    let inputs = ReportInputs {
        name: "run",
        config: &config,
        history: &history,
        evaluation: &evaluation,
        test: &test_set,
    };
    let out = dir.path().join("report");
    let written = report::write_report(&inputs, &out).unwrap();
    assert_eq!(written.len(), 5);

    assert_eq!(dimensions(&out.join(report::LOSS_PNG)), charts::CURVE_SIZE);
    assert_eq!(
        dimensions(&out.join(report::ACCURACY_PNG)),
        charts::CURVE_SIZE
    );
    assert_eq!(
        dimensions(&out.join(report::CONFUSION_PNG)),
        charts::CONFUSION_SIZE
    );
    let mistakes = evaluation.most_confident_mistakes(test_set.labels(), report::MISTAKES_SHOWN);
    assert_eq!(
        mistakes.len(),
        report::MISTAKES_SHOWN,
        "a two-epoch model makes at least 16 mistakes"
    );
    assert!(
        mistakes
            .windows(2)
            .all(|w| w[0].confidence >= w[1].confidence)
    );
    let grid = report::mistakes_grid(&evaluation, &test_set);
    assert_eq!(
        dimensions(&out.join(report::MISTAKES_PNG)),
        (grid.width(), grid.height())
    );

    let html = std::fs::read_to_string(out.join(report::REPORT_HTML)).unwrap();
    let sources: Vec<&str> = html
        .split("src=\"")
        .skip(1)
        .map(|rest| &rest[..rest.find('"').unwrap()])
        .collect();
    assert_eq!(sources.len(), 4, "four pictures");
    for source in &sources {
        let encoded = source
            .strip_prefix("data:image/png;base64,")
            .expect("pictures are embedded, not linked");
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        image::load_from_memory(&png).unwrap();
    }
    assert!(!html.contains("href="), "the page links to nothing");
    assert!(html.contains(&format!("{:.2}%", 100.0 * evaluation.accuracy())));
    assert_eq!(
        html.matches("<tr><td>").count(),
        2 + 10,
        "a row per epoch and per class, besides the summary"
    );
    assert!(
        html.contains("<tr><td>0</td>") && !html.contains("<td>0: 0</td>"),
        "a digit's class is named once"
    );
}

#[test]
fn the_commands_report_on_a_run_and_compare_two_trained_variants() {
    let dir = tempfile::tempdir().unwrap();
    let quick = ["--dataset", "mnist-lite", "--epochs", "1", "--limit", "640"];
    let output = digits(
        dir.path(),
        &[&["train", "--out", "run"][..], &quick].concat(),
    );
    assert!(output.status.success(), "{}", stderr(&output));

    let report = digits(dir.path(), &["report", "run"]);
    assert!(report.status.success(), "{}", stderr(&report));
    assert!(stdout(&report).contains("wrote run/report/report.html"));
    assert_eq!(
        dimensions(&dir.path().join("run/report/loss.png")),
        charts::CURVE_SIZE
    );

    let compare = digits(
        dir.path(),
        &[&["compare", "--vary", "optimizer=adam,sgd"][..], &quick].concat(),
    );
    assert!(compare.status.success(), "{}", stderr(&compare));
    let text = stdout(&compare);
    assert!(
        text.contains("optimizer=adam ") && text.contains("optimizer=sgd "),
        "{text}"
    );
    assert!(
        dir.path()
            .join("runs/compare-optimizer/sgd/config.json")
            .is_file()
    );
    assert_eq!(
        dimensions(&dir.path().join("compare.png")),
        charts::comparison_size(2)
    );
    assert!(charts::comparison_size(2).1 > charts::COMPARISON_SIZE.1);

    // The same comparison again trains into fresh folders.
    let twice = digits(
        dir.path(),
        &[
            &[
                "compare",
                "--vary",
                "optimizer=adam,sgd",
                "--out",
                "twice.png",
            ][..],
            &quick,
        ]
        .concat(),
    );
    assert!(twice.status.success(), "{}", stderr(&twice));
    assert!(
        dir.path()
            .join("runs/compare-optimizer-2/sgd/config.json")
            .is_file()
    );
    // Runs alike in their settings and folder names are told apart by their paths.
    let alike = digits(
        dir.path(),
        &[
            "compare",
            "runs/compare-optimizer/adam",
            "runs/compare-optimizer-2/adam",
            "--out",
            "alike.png",
        ],
    );
    assert!(alike.status.success(), "{}", stderr(&alike));
    let text = stdout(&alike);
    assert!(
        text.contains("runs/compare-optimizer/adam ")
            && text.contains("runs/compare-optimizer-2/adam "),
        "{text}"
    );

    // Saved runs compare too; identical settings are told apart by their folder names.
    let again = digits(
        dir.path(),
        &[
            "compare",
            "run",
            "runs/compare-optimizer/adam",
            "--out",
            "same.png",
        ],
    );
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stdout(&again).contains("\nrun "), "{}", stdout(&again));
}

#[test]
fn compare_refuses_what_it_cannot_do_before_training_anything() {
    let dir = tempfile::tempdir().unwrap();
    assert_clean_failure(&digits(dir.path(), &["compare"]), "at least two runs");
    assert_clean_failure(
        &digits(dir.path(), &["compare", "--vary", "colour=red,blue"]),
        "cannot vary 'colour'",
    );
    assert_clean_failure(
        &digits(dir.path(), &["compare", "--vary", "activation=relu,swish"]),
        "unknown activation 'swish'",
    );
    assert_clean_failure(
        &digits(dir.path(), &["compare", "--vary", "lr=0.1"]),
        "at least two values",
    );
    assert_clean_failure(
        &digits(dir.path(), &["compare", "--vary", "seed=1,2,1"]),
        "--vary seed lists 1 twice",
    );
    // Each variant's settings are checked whole, as `digits train` checks them.
    assert_clean_failure(
        &digits(dir.path(), &["compare", "--vary", "momentum=0.5,0.9"]),
        "--vary momentum=0.5: --momentum is a setting of --optimizer sgd; adam has none",
    );
    assert_clean_failure(
        &digits(dir.path(), &["compare", "--vary", "hidden=64+0,32"]),
        "--vary hidden=64,0: invalid value '0' for '--hidden <HIDDEN>': 0 is not in 1..=65536",
    );
    assert_clean_failure(
        &digits(dir.path(), &["compare", "--vary", "device=cpu,auto"]),
        "cannot vary 'device'",
    );
    assert!(!dir.path().join("runs").exists(), "nothing was trained");
    assert_clean_failure(
        &digits(dir.path(), &["report", "nowhere"]),
        "nowhere is not a run folder",
    );
}
