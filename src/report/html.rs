//! The report as one self-contained HTML page: images are embedded as data URIs.

use std::fmt::Write;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::{MISTAKES_SHOWN, Pngs, ReportInputs};

const STYLE: &str = "body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;\
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}\
img{max-width:100%;border:1px solid #eee}";

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn image(png: &[u8], alt: &str) -> String {
    format!(
        "<img alt=\"{}\" src=\"data:image/png;base64,{}\">",
        escape(alt),
        STANDARD.encode(png)
    )
}

pub(super) fn page(inputs: &ReportInputs, pngs: &Pngs) -> String {
    let Pngs {
        loss,
        accuracy,
        confusion,
        mistakes,
    } = pngs;
    let evaluation = inputs.evaluation;
    let names = inputs.test.class_names();
    let config = inputs.config;
    let mut html = String::new();
    let title = format!("digits report: {}", inputs.name);
    // Writing to a String cannot fail.
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>{STYLE}</style></head><body>\n<h1>{t}</h1>\n",
        t = escape(&title)
    );
    let _ = write!(
        html,
        "<table><tr><th>model</th><td>{model} ({params} parameters)</td></tr>",
        model = escape(&config.model.describe()),
        params = config.model.parameter_count(),
    );
    if let Some(source) = &config.imported {
        let _ = write!(
            html,
            "<tr><th>imported from</th><td>{file} (SHA-256 {sha256}, {date})</td></tr>",
            file = escape(&source.file),
            sha256 = escape(&source.sha256),
            date = escape(&source.date),
        );
    }
    if let Some(train) = &config.train {
        let _ = write!(
            html,
            "<tr><th>training</th><td>{optimizer:?}, lr {lr}, batch {batch}, {epochs} epochs, \
             shuffle {shuffle}, seed {seed}</td></tr>",
            optimizer = train.optimizer.kind(),
            lr = train.lr,
            batch = train.batch_size,
            epochs = config.epochs_done,
            shuffle = train.shuffle,
            seed = train.seed,
        );
    }
    let _ = writeln!(
        html,
        "<tr><th>trained on</th><td>{dataset}</td></tr>\
         <tr><th>test set</th><td>{test} ({count} images)</td></tr>\
         <tr><th>test accuracy</th><td>{acc:.2}%</td></tr>\
         <tr><th>average test loss</th><td>{loss:.6}</td></tr></table>",
        dataset = config.dataset,
        test = inputs.test.name,
        count = evaluation.count,
        acc = 100.0 * evaluation.accuracy(),
        loss = evaluation.avg_loss,
    );
    let _ = write!(
        html,
        "<h2>Loss</h2>\n{}\n",
        image(loss, "loss per batch and epoch")
    );
    let _ = write!(
        html,
        "<h2>Accuracy</h2>\n{}\n",
        image(accuracy, "test accuracy per epoch")
    );
    html.push_str(
        "<h2>Per epoch</h2>\n<table><tr><th>epoch</th><th>training loss</th><th>test loss</th>\
         <th>test accuracy</th><th>learning rate</th><th>seconds</th></tr>\n",
    );
    for e in inputs.history {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{:.6}</td><td>{:.6}</td><td>{:.2}%</td><td>{}</td><td>{:.2}</td></tr>",
            e.epoch,
            e.train_loss,
            e.test_loss,
            100.0 * e.test_accuracy,
            e.lr,
            e.seconds
        );
    }
    html.push_str(
        "</table>\n<h2>Per class</h2>\n<table><tr><th>class</th><th>images</th>\
                   <th>precision</th><th>recall</th><th>F1</th></tr>\n",
    );
    for (name, m) in names.iter().zip(evaluation.per_class().iter()) {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{:.2}%</td><td>{:.2}%</td><td>{:.4}</td></tr>",
            escape(name),
            m.support,
            100.0 * m.precision,
            100.0 * m.recall,
            m.f1
        );
    }
    let _ = write!(
        html,
        "</table>\n<h2>Confusion matrix</h2>\n{}\n\
         <h2>The {MISTAKES_SHOWN} surest mistakes</h2>\n<p>Titled true class -&gt; predicted \
         class and the model's confidence.</p>\n{}\n</body></html>\n",
        image(confusion, "confusion matrix"),
        image(mistakes, "the most confidently wrong test images")
    );
    html
}
