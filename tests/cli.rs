//! The `breakwater` command line: `--version`, `validate` (exit 0 when the
//! file is valid, 2 with every problem printed as `FILE:LINE:COL: message` or
//! `FILE: PATH: message`), and `run` on a file that cannot be read.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// No command here should take more than this to exit.
const EXIT_WITHIN: Duration = Duration::from_secs(10);

/// Runs the binary with `args` in `cwd` and collects its output; panics when
/// it does not exit within [`EXIT_WITHIN`] (the child is then killed by pid).
async fn breakwater(args: &[&str], cwd: &Path) -> Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_breakwater"))
        .args(args)
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn breakwater");
    tokio::time::timeout(EXIT_WITHIN, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("breakwater {args:?} did not exit within {EXIT_WITHIN:?}"))
        .expect("collect output")
}

/// Writes `yaml` as `name` in a fresh temporary directory.
fn write_config(name: &str, yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, yaml).expect("write config");
    (dir, path)
}

async fn validate(path: &Path) -> Output {
    let file = path.to_str().expect("utf-8 path");
    breakwater(
        &["validate", "-c", file],
        Path::new(env!("CARGO_MANIFEST_DIR")),
    )
    .await
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const GOOD: &str = r#"
admin: { listen: 127.0.0.1:0 }
listeners:
  - { name: main, listen: 127.0.0.1:0 }
upstreams:
  app: { url: http://127.0.0.1:8080 }
routes:
  - name: hello
    match: { path_exact: /hello }
    respond: { status: 200, body: "hello\n" }
  - name: app
    match: { path_prefix: / }
    upstream: app
"#;

#[tokio::test]
async fn version_flag_prints_the_package_version_and_exits_0() {
    let out = breakwater(&["--version"], Path::new(env!("CARGO_MANIFEST_DIR"))).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!("breakwater {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn validate_accepts_a_good_file_with_exit_0() {
    let (_dir, path) = write_config("good.yaml", GOOD);
    let out = validate(&path).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out).trim(), format!("{}: ok", path.display()));
    assert!(stderr(&out).is_empty(), "stderr: {}", stderr(&out));
}

#[tokio::test]
async fn validate_accepts_the_shipped_default_config() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/breakwater.yaml");
    let out = validate(&path).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
}

#[tokio::test]
async fn validate_without_a_file_falls_back_to_the_embedded_default() {
    // In a directory without config/breakwater.yaml, the embedded copy is used.
    let empty = tempfile::tempdir().expect("tempdir");
    let out = breakwater(&["validate"], empty.path()).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
}

#[tokio::test]
async fn validate_reports_an_unknown_key_with_its_line_and_column_and_exit_2() {
    let yaml = "\
admin: { listen: 127.0.0.1:0 }
listeners:
  - name: main
    listen: 127.0.0.1:0
    colour: blue
";
    let (_dir, path) = write_config("unknown-key.yaml", yaml);
    let out = validate(&path).await;
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    let line = err.lines().next().unwrap_or_default();
    assert!(
        line.starts_with(&format!("{}:5:5: ", path.display())),
        "expected FILE:5:5: first, got:\n{err}"
    );
    assert!(line.contains("unknown field `colour`"), "got:\n{err}");
}

#[tokio::test]
async fn validate_reports_a_bad_duration_with_its_line_and_column() {
    let yaml = "\
admin: { listen: 127.0.0.1:0 }
listeners:
  - { name: main, listen: 127.0.0.1:0 }
defaults:
  timeout: 10 seconds
";
    let (_dir, path) = write_config("bad-duration.yaml", yaml);
    let out = validate(&path).await;
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("{}:5:12: ", path.display())),
        "expected FILE:5:12: (the value of `timeout`), got:\n{err}"
    );
    assert!(err.contains("duration"), "got:\n{err}");
}

#[tokio::test]
async fn validate_prints_every_cross_reference_error_in_one_run() {
    let yaml = r#"
admin: { listen: 127.0.0.1:0 }
listeners:
  - { name: main, listen: 127.0.0.1:0 }
upstreams:
  app: { url: http://127.0.0.1:8080 }
routes:
  - name: orders
    match: { path_prefix: /orders }
    upstream: ap
  - name: orders
    match: { path_prefix: /more-orders }
    upstream: app
  - name: nothing
    match: { path_prefix: /nothing }
"#;
    let (_dir, path) = write_config("cross.yaml", yaml);
    let out = validate(&path).await;
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    let file = path.display();
    let lines: Vec<&str> = err.lines().collect();
    let expected_upstream =
        format!(r#"{file}: routes[0] (orders).upstream: no upstream named "ap"; known: app"#);
    assert!(
        lines.contains(&expected_upstream.as_str()),
        "missing {expected_upstream:?} in:\n{err}"
    );
    let has = |prefix: String, words: &[&str]| {
        lines
            .iter()
            .any(|l| l.starts_with(&prefix) && words.iter().all(|w| l.contains(w)))
    };
    assert!(
        has(
            format!("{file}: routes[1] (orders).name: "),
            &["duplicate route name"]
        ),
        "no duplicate-name error in:\n{err}"
    );
    assert!(
        has(
            format!("{file}: routes[2] (nothing): "),
            &["upstream", "respond"]
        ),
        "no neither-upstream-nor-respond error in:\n{err}"
    );
    let mut distinct = lines.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(
        distinct.len() >= 3,
        "expected at least 3 distinct errors, got:\n{err}"
    );
}

#[tokio::test]
async fn run_with_a_missing_file_exits_2_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("missing.yaml");
    let file = path.to_str().expect("utf-8 path");
    let out = breakwater(&["run", "-c", file], dir.path()).await;
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(file),
        "the message does not name {file}:\n{err}"
    );
    assert!(err.contains("cannot read"), "got:\n{err}");
}
