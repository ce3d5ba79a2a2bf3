//! The guides show real commands with their real output, and real code from
//! `examples/tutorial.rs`: this test runs every `$ digits ...` line of the English guide's
//! `console` blocks (in order, in one scratch folder) and compares what it prints with what the
//! guide shows, where a line `...` stands for any number of lines; it checks that every `rust`
//! block is a verbatim excerpt of the example; and that the Chinese guide's blocks are the
//! English guide's.
//!
//! After changing what a command prints, regenerate the outputs with
//! `DIGITS_BLESS=1 cargo test --test guides` and read the diff; abridged outputs (with `...`) that still match are kept.

use std::path::Path;
use std::process::Command;

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

/// Runs one guide command (`digits ...`) in `dir`; its standard output, trailing spaces removed.
fn run(command: &str, dir: &Path) -> String {
    let words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(
        words[0], "digits",
        "guides show digits commands only: {command}"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_digits"))
        .args(&words[1..])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "`{command}` failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
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
                    let actual = run(command, scratch.path());
                    commands += 1;
                    blessed.push(body[start].to_string());
                    let actual_lines: Vec<&str> = actual.lines().collect();
                    let shown = &body[start + 1..end];
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
