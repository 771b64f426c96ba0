//! The `procpool` command as a user runs it: real processes, the embedded API server, short
//! latencies.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use assert_cmd::cargo::CommandCargoExt;
use procpool_cli::api::dataset::{POST_201_REPOSTS, TUTORIAL_POST};
use procpool_cli::crawl::{self, PageRequest};
use tests_integration::{assert_no_children, workers_of};

fn procpool() -> Command {
    Command::cargo_bin("procpool").expect("the procpool binary is built")
}

/// Runs `procpool args` to its end, and checks that it left no process behind: this process
/// becomes the reaper of orphans, so that a worker that outlived `procpool` would show.
fn run(args: &[&str]) -> (i32, String, String) {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer and touches no memory.
    let adopted = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(adopted, 0);
    let output = procpool().args(args).output().expect("procpool runs");
    assert_no_children();
    (
        output.status.code().expect("procpool exited, not killed"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn seed_prints_both_tables_as_json() {
    let (code, stdout, stderr) = run(&["seed", "--runs", "1", "--latency-ms", "20", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let value: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let factorial = value["factorial"].as_array().unwrap();
    let reposts = value["reposts"].as_array().unwrap();
    assert_eq!(factorial.len(), 10, "one call plus nine methods");
    assert_eq!(reposts.len(), 12, "one page plus eleven rows");
    assert!(
        reposts
            .iter()
            .all(|row| row["seconds"].as_f64().unwrap() > 0.0)
    );
    assert_eq!(factorial[1]["method"], "serial");
    // One schema: durations are numbers of seconds (or null), never text.
    assert_eq!(value["command"], "seed");
    assert_eq!(value["latency_seconds"], 0.02);
    for row in factorial {
        assert!(row["warm_seconds"].as_f64().unwrap() > 0.0, "{row}");
        assert!(
            row["cold_seconds"].is_null() || row["cold_seconds"].is_f64(),
            "{row}"
        );
        assert!(
            row["tutorial_seconds"].is_null() || row["tutorial_seconds"].is_f64(),
            "{row}"
        );
    }
    assert_eq!(factorial[0]["tutorial_seconds"], 29.1e-6);
    assert_eq!(reposts[0]["tutorial_seconds"], 0.828);
    let plans: Vec<&str> = reposts[1..]
        .iter()
        .map(|row| row["plan"].as_str().unwrap())
        .collect();
    assert!(plans.contains(&"all_at_once") && plans.contains(&"total_first"));
}

#[test]
fn seed_labels_the_all_at_once_rows() {
    let (code, stdout, stderr) = run(&["seed", "--runs", "1", "--latency-ms", "5"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("asks for"), "{stdout}");
    assert_eq!(stdout.matches("all 10 at once").count(), 7, "{stdout}");
    assert!(stdout.contains("page 1, then the rest"), "{stdout}");
}

#[test]
fn seed_shows_pids_and_tables() {
    let (code, stdout, stderr) = run(&["seed", "--runs", "1", "--latency-ms", "10", "--show-pids"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.matches("pid is ").count(), 10, "{stdout}");
    assert!(stdout.contains(" start! (page "), "{stdout}");
    assert!(stdout.contains("tutorial (Python)"));
    assert!(stdout.contains("apply_async"));
    assert!(stdout.contains("156 ms") && stdout.contains("10.2 s"));
}

#[test]
fn factorial_runs_under_every_method() {
    for method in [
        "serial",
        "apply",
        "apply_async",
        "map",
        "map_async",
        "imap",
        "imap_unordered",
    ] {
        let (code, stdout, stderr) = run(&[
            "factorial",
            "--n",
            "30",
            "--processes",
            "2",
            "--method",
            method,
            "--runs",
            "1",
            "--json",
        ]);
        assert_eq!(code, 0, "{method}: {stderr}");
        let value: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(value["command"], "factorial");
        assert_eq!(value["method"], method);
        assert!(value["median_seconds"].as_f64().unwrap() > 0.0);
        assert_eq!(value["digits_of_last"], 33, "30! has 33 digits");
    }
    let (code, _, stderr) = run(&[
        "factorial",
        "--n",
        "50",
        "--method",
        "map",
        "--chunksize",
        "3",
        "--cold",
        "--runs",
        "2",
    ]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn the_start_method_the_environment_names_is_used_and_a_bad_name_refused() {
    let factorial = ["factorial", "--n", "20", "--processes", "2", "--runs", "1"];
    for method in ["spawn", "forkserver"] {
        let output = procpool()
            .env("PROCPOOL_START_METHOD", method)
            .args(factorial)
            .output()
            .unwrap();
        assert!(output.status.success(), "{method}: {output:?}");
    }
    let output = procpool()
        .env("PROCPOOL_START_METHOD", "fork")
        .args(factorial)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("PROCPOOL_START_METHOD=\"fork\" names no start method"),
        "{stderr}"
    );
    assert_no_children();
}

#[test]
fn reposts_writes_each_repost_once_in_order() {
    let dir = std::env::temp_dir().join(format!("procpool-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (mid, method, expected) in [
        (TUTORIAL_POST, "apply_async", 2000),
        (TUTORIAL_POST, "serial", 2000),
        (POST_201_REPOSTS, "imap_unordered", 201),
        (POST_201_REPOSTS, "apply", 201),
    ] {
        let out = dir.join(format!("{mid}-{method}.jsonl"));
        let mid = mid.to_string();
        let (code, stdout, stderr) = run(&[
            "reposts",
            "--mid",
            &mid,
            "--method",
            method,
            "--processes",
            "10",
            "--latency-ms",
            "5",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(code, 0, "{method}: {stderr}");
        let value: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(value["reposts_written"], expected);
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), expected);
        let ids: Vec<u64> = lines.iter().map(|l| l["id"].as_u64().unwrap()).collect();
        assert_eq!(
            ids.iter().collect::<HashSet<_>>().len(),
            expected,
            "each repost once"
        );
        assert!(
            ids.windows(2).all(|w| w[0] > w[1]),
            "newest first, in page order"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn api_errors_are_clear_messages_with_a_failing_exit() {
    let (code, _, stderr) = run(&[
        "reposts",
        "--token",
        "wrong",
        "--latency-ms",
        "0",
        "--method",
        "apply",
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("21332") && stderr.contains("invalid_access_token"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&["reposts", "--mid", "42", "--latency-ms", "0"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("20101"), "{stderr}");
    let (code, _, stderr) = run(&[
        "reposts",
        "--api-base",
        "http://127.0.0.1:1",
        "--retries",
        "0",
        "--method",
        "serial",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.starts_with("procpool: crawl of post"), "{stderr}");
}

#[test]
fn bad_flags_are_usage_errors() {
    for args in [
        &["factorial", "--method", "nope"][..],
        &["factorial", "--processes", "0"],
        &["factorial", "--chunksize", "0"],
        &["factorial", "--n", "10001"],
        &["reposts", "--timeout", "soon"],
        &["reposts", "--resume"],
        &["reposts", "--resume", "--out", "-"],
        &["seed", "--runs", "0"],
        &["reposts", "--mid", "not-a-number"],
        &["no-such-command"],
    ] {
        let (code, stdout, stderr) = run(args);
        assert_eq!(code, 2, "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains("error:"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("seed"));
    // The exit status is in the short help and the long one alike.
    for help in [
        &["-h"][..],
        &["--help"],
        &["reposts", "--help"],
        &["serve-api", "-h"],
    ] {
        let (code, stdout, _) = run(help);
        assert_eq!(code, 0, "{help:?}");
        assert!(
            stdout.contains("Exit status: 0 success; 1 runtime error; 2 usage error"),
            "{help:?}: {stdout}"
        );
    }
}

#[test]
fn serve_api_prints_its_address_and_serves() {
    let mut child = procpool()
        .args(["serve-api", "--port", "0", "--latency-ms", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let base = first.rsplit(' ').next().unwrap().to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{first}");
    let page = crawl::fetch_page(&PageRequest::new(
        base,
        TUTORIAL_POST,
        procpool_cli::api::DEFAULT_TOKEN,
    ))
    .unwrap();
    assert_eq!(page.reposts.len(), 200);
    child.kill().unwrap();
    child.wait().unwrap();
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // A zombie has exited; only its parent's wait is missing.
        stat.rfind(')')
            .and_then(|at| stat[at + 1..].split_whitespace().next())
            != Some("Z")
    })
}

/// Waits (observing, not synchronising) until `done` holds or `limit` passes.
fn within(limit: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    done()
}

#[test]
fn ctrl_c_during_a_map_exits_promptly_and_leaves_no_worker() {
    let mut child = procpool()
        .args([
            "factorial",
            "--n",
            "3000",
            "--method",
            "map",
            "--processes",
            "2",
            "--runs",
            "1000",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let parent = child.id();
    let mut workers = Vec::new();
    assert!(
        within(std::time::Duration::from_secs(60), || {
            workers = workers_of(parent);
            workers.len() == 2
        }),
        "the pool's two workers start"
    );
    // SAFETY: kill has no memory effects; the child is ours and not yet reaped.
    assert_eq!(unsafe { libc::kill(parent as i32, libc::SIGINT) }, 0);
    assert!(
        within(std::time::Duration::from_secs(5), || child
            .try_wait()
            .unwrap()
            .is_some()),
        "procpool exits"
    );
    assert!(
        within(std::time::Duration::from_secs(1), || workers
            .iter()
            .all(|&w| !alive(w))),
        "no worker outlives it: {workers:?}"
    );
}
