//! The guides show real commands with their real output, and real code from
//! `examples/tutorial.rs`: this test runs every `$ digits ...` line of the English guide's
//! `console` blocks (in order, in one scratch folder) and compares what it prints, standard
//! output and standard error interleaved as on a terminal, with what the guide shows, where a
//! line `...` stands for any number of lines; a command shown with an `error:` line must fail,
//! every other one succeed. It checks that every `rust` block is a verbatim excerpt of the
//! example; that the Chinese guide's blocks are the English guide's; and that the download
//! warnings the guides and the README quote are the ones digits prints.
//!
//! After changing what a command prints, regenerate the outputs with
//! `DIGITS_BLESS=1 cargo test --test guides` and read the diff; abridged outputs (with `...`) that still match are kept.

use std::io::Read;
use std::path::Path;
use std::process::Command;

use digits::data::DatasetName;

const GUIDES: [&str; 2] = ["docs/tutorial.md", "docs/tutorial.zh-CN.md"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One fenced block: its language, and the line range of its body in the file.
struct Block {
    language: String,
    body: std::ops::Range<usize>,
}

fn blocks(lines: &[&str]) -> Vec<Block> {
    let mut found = Vec::new();
    let mut open: Option<(String, usize)> = None;
    for (i, line) in lines.iter().enumerate() {
        if let Some(fence) = line.strip_prefix("```") {
            match open.take() {
                Some((language, start)) => found.push(Block {
                    language,
                    body: start..i,
                }),
                None => open = Some((fence.trim().to_string(), i + 1)),
            }
        }
    }
    found
}

/// What a command printed, and whether it succeeded.
struct Outcome {
    success: bool,
    /// Standard output and standard error in the order they were written, trailing spaces
    /// removed.
    printed: String,
}

/// Runs `digits` with `args` in `dir`, its standard output and standard error going into one
/// pipe, as both go to one terminal.
fn run_digits(args: &[&str], dir: &Path) -> Outcome {
    let (mut reader, writer) = std::io::pipe().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_digits"))
        .args(args)
        .current_dir(dir)
        // Built with wgpu, looking for a GPU wakes Mesa's Vulkan drivers, which complain on
        // standard error when there is no desktop session's runtime folder (as in CI); a
        // user's terminal has one.
        .env("XDG_RUNTIME_DIR", dir)
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .unwrap();
    // The command, dropped with the statement above, held the pipe's last writers: reading
    // ends when digits exits.
    let mut printed = String::new();
    reader.read_to_string(&mut printed).unwrap();
    let success = child.wait().unwrap().success();
    let printed = printed
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n");
    Outcome { success, printed }
}

/// Runs one guide command (`digits ...`) in `dir`.
fn run(command: &str, dir: &Path) -> Outcome {
    let words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(
        words[0], "digits",
        "guides show digits commands only: {command}"
    );
    run_digits(&words[1..], dir)
}

/// Whether an output reports a failure: the guides show refusals with their `error:` line.
fn shows_error(lines: &[&str]) -> bool {
    lines.iter().any(|line| line.starts_with("error:"))
}

/// Whether `actual` matches `expected`, where an expected line `...` matches any run of lines.
fn matches(expected: &[&str], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((&"...", rest)) => (0..=actual.len()).any(|skip| matches(rest, &actual[skip..])),
        Some((line, rest)) => {
            actual
                .first()
                .is_some_and(|a| without_device_reason(a) == without_device_reason(line))
                && matches(rest, &actual[1..])
        }
    }
}

/// `Using cpu device (why)` without the why, which depends on the GPU backends built in and on
/// the machine's adapters; the guides show a CPU-only build's.
fn without_device_reason(line: &str) -> &str {
    match line.split_once(" device (") {
        Some((using, _)) if line.starts_with("Using ") => using,
        _ => line,
    }
}

fn check_guide(guide: &str, bless: bool) {
    let path = root().join(guide);
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let example = std::fs::read_to_string(root().join("examples/tutorial.rs")).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    // The guides refer to the example images by their place in the repository.
    let examples = scratch.path().join("docs/examples");
    std::fs::create_dir_all(&examples).unwrap();
    for entry in std::fs::read_dir(root().join("docs/examples"))
        .unwrap()
        .flatten()
    {
        std::fs::copy(entry.path(), examples.join(entry.file_name())).unwrap();
    }
    let mut blessed: Vec<String> = Vec::new();
    let mut cursor = 0;
    let mut commands = 0;
    for block in blocks(&lines) {
        let body = &lines[block.body.clone()];
        match block.language.as_str() {
            "rust" => {
                let excerpt = body.join("\n");
                assert!(
                    example.contains(&excerpt),
                    "{guide}: this rust block is not in examples/tutorial.rs:\n{excerpt}"
                );
            }
            "console" => {
                blessed.extend(
                    lines[cursor..block.body.start]
                        .iter()
                        .map(|l| l.to_string()),
                );
                let starts: Vec<usize> = (0..body.len())
                    .filter(|&i| body[i].starts_with("$ "))
                    .collect();
                assert!(
                    !starts.is_empty(),
                    "{guide}: a console block without a command"
                );
                for (n, &start) in starts.iter().enumerate() {
                    let end = starts.get(n + 1).copied().unwrap_or(body.len());
                    let command = &body[start][2..];
                    let outcome = run(command, scratch.path());
                    commands += 1;
                    blessed.push(body[start].to_string());
                    let actual_lines: Vec<&str> = outcome.printed.lines().collect();
                    let shown = &body[start + 1..end];
                    let should_fail = shows_error(if bless { &actual_lines } else { shown });
                    assert_eq!(
                        outcome.success,
                        !should_fail,
                        "{guide}: `{command}` should {} (the guides show a refusal by its \
                         `error:` line), but printed\n{}",
                        if should_fail { "fail" } else { "succeed" },
                        outcome.printed
                    );
                    if bless && !matches(shown, &actual_lines) {
                        blessed.extend(actual_lines.iter().map(|l| l.to_string()));
                    } else if bless {
                        blessed.extend(shown.iter().map(|l| l.to_string()));
                    } else {
                        let actual = actual_lines;
                        assert!(
                            matches(shown, &actual),
                            "{guide}: `{command}` printed\n{}\n\nbut the guide shows\n{}",
                            actual.join("\n"),
                            shown.join("\n")
                        );
                    }
                }
                cursor = block.body.end;
            }
            _ => {}
        }
    }
    assert!(commands >= 8, "{guide}: only {commands} commands");
    if bless {
        blessed.extend(lines[cursor..].iter().map(|l| l.to_string()));
        std::fs::write(&path, blessed.join("\n") + "\n").unwrap();
    }
}

/// The `console` and `rust` blocks of a guide, in order.
fn code_blocks(guide: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join(guide)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    blocks(&lines)
        .into_iter()
        .filter(|b| b.language == "console" || b.language == "rust")
        .map(|b| lines[b.body].join("\n"))
        .collect()
}

#[test]
fn every_command_and_output_in_the_guides_is_real() {
    let [english, chinese] = GUIDES;
    check_guide(english, std::env::var_os("DIGITS_BLESS").is_some());
    // The Chinese guide shows the very same commands, outputs and code, so checking the English
    // one's against the program covers both.
    assert_eq!(
        code_blocks(chinese),
        code_blocks(english),
        "{chinese} and {english} differ in their code"
    );
}

#[test]
fn ellipses_match_any_run_of_lines() {
    assert!(matches(&["a", "...", "d"], &["a", "b", "c", "d"]));
    assert!(matches(&["a", "...", "b"], &["a", "b"]));
    assert!(!matches(&["a", "...", "d"], &["a", "b", "c"]));
    assert!(!matches(&["a"], &["a", "b"]));
    assert!(matches(
        &["Using cpu device (no GPU backend in this build)"],
        &["Using cpu device (wgpu: llvmpipe emulates a GPU on the CPU)"]
    ));
    assert!(!matches(
        &["Using cpu device (x)"],
        &["Using wgpu device (x)"]
    ));
}

/// The four warnings every offline user meets first, as the README and the guides quote them
/// (the first four consecutive lines from `warning: https://`), are the ones digits prints
/// when no mirror answers. The first two name the published mirrors and end with the reason
/// the system gave, which differs between machines (here the connection is refused by a port
/// on 127.0.0.1 rather than a name left unresolved); the last two are compared word for word.
#[test]
fn the_offline_warnings_quoted_are_the_ones_digits_prints() {
    let file = "train-images-idx3-ubyte.gz";
    let published = DatasetName::Mnist.mirrors();
    // A port that was just free: connections to it are refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let local = [format!("http://{closed}/a"), format!("http://{closed}/b")];
    let scratch = tempfile::tempdir().unwrap();
    let outcome = run_digits(
        &[
            "train", "--epochs", "1", "--limit", "32", "--mirror", &local[0], "--mirror", &local[1],
        ],
        scratch.path(),
    );
    assert!(outcome.success, "{}", outcome.printed);
    let printed: Vec<&str> = outcome
        .printed
        .lines()
        .filter(|line| line.starts_with("warning: "))
        .collect();
    assert_eq!(printed.len(), 4, "{}", outcome.printed);
    for (mirror, line) in local.iter().zip(&printed) {
        assert!(
            line.starts_with(&format!("warning: {mirror}/{file}: ")),
            "{line}"
        );
    }
    for document in ["README.md", GUIDES[0], GUIDES[1]] {
        let text = std::fs::read_to_string(root().join(document)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let first = lines
            .iter()
            .position(|line| line.starts_with("warning: https://"))
            .unwrap_or_else(|| panic!("{document} quotes no download warning"));
        let quoted = lines
            .get(first..first + 4)
            .unwrap_or_else(|| panic!("{document} ends within its download warnings"));
        for (mirror, line) in published.iter().zip(quoted) {
            assert!(
                line.starts_with(&format!("warning: {mirror}{file}: ")),
                "{document}: {line}"
            );
        }
        assert_eq!(quoted[2..], printed[2..], "{document}");
    }
}
