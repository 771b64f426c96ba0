//! `procpool worker` and `--redis`: the crawl through two host agents on a real
//! `redis-server`, each page's host named, and workers that stop cleanly on SIGTERM.

use std::process::{Child, Command, Stdio};

use assert_cmd::cargo::CommandCargoExt;
use tests_integration::redis_server::{Server, wait_gone};
use tests_integration::{assert_no_children, descendants_of};

fn procpool() -> Command {
    Command::cargo_bin("procpool").expect("the procpool binary is built")
}

/// `procpool worker` named `name`, with 2 workers, on `queue`.
fn worker(server: &Server, queue: &str, name: &str) -> Child {
    procpool()
        .args(["worker", "--redis", &server.url(), "--queue", queue])
        .args(["--processes", "2", "--name", name, "--lease-ms", "1000"])
        .stderr(Stdio::null())
        .spawn()
        .expect("start procpool worker")
}

/// Stops a worker with SIGTERM: it hands back its calls and exits 0, and its workers end.
fn stop(mut worker: Child) {
    let workers = descendants_of(worker.id());
    // SAFETY: kill(2) of our own child's pid; no memory is involved.
    assert_eq!(unsafe { libc::kill(worker.id() as i32, libc::SIGTERM) }, 0);
    let status = worker.wait().expect("wait for the worker");
    assert!(status.success(), "procpool worker exited with {status}");
    wait_gone(&workers);
}

#[test]
fn reposts_through_two_workers_name_the_host_of_each_page() {
    let server = Server::start();
    let queue = format!("cli-{}", std::process::id());
    let a = worker(&server, &queue, "host-a");
    let b = worker(&server, &queue, "host-b");
    let out = procpool()
        .args(["reposts", "--redis", &server.url(), "--queue", &queue])
        .args([
            "--latency-ms",
            "5",
            "--method",
            "apply_async",
            "--json",
            "--out",
            "-",
        ])
        .output()
        .expect("procpool reposts runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With the reposts on standard output, the summary is on standard error.
    let summary: serde_json::Value = String::from_utf8_lossy(&out.stderr)
        .lines()
        .find_map(|line| serde_json::from_str(line).ok())
        .expect("a JSON summary");
    assert_eq!(summary["pages_written"], 10, "{summary}");
    let hosts = summary["hosts"].as_object().expect("pages by host");
    let mut pages: Vec<u64> = Vec::new();
    for (host, list) in hosts {
        assert!(host == "host-a" || host == "host-b", "{host}");
        pages.extend(list.as_array().unwrap().iter().map(|p| p.as_u64().unwrap()));
    }
    pages.sort_unstable();
    assert_eq!(pages, (1..=10).collect::<Vec<u64>>());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2000);
    stop(a);
    stop(b);
    drop(server);
    assert_no_children();
}

#[test]
fn a_worker_without_redis_is_a_usage_error() {
    let out = procpool()
        .arg("worker")
        .env_remove("PROCPOOL_REDIS")
        .output()
        .expect("procpool worker runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--redis"));
    assert_no_children();
}
