//! `status`, `retry`, `cancel` and `prune` from the operator's side.

mod common;

use common::{Scratch, count, stderr, stdout};

fn ids(v: &serde_json::Value) -> Vec<i64> {
    v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i.as_i64())
        .collect()
}

#[test]
fn status_of_an_empty_queue_says_so() {
    let s = Scratch::new();
    let out = s.cmd(&["status"]).output().unwrap();
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("The queue is empty"),
        "{}",
        stdout(&out)
    );
    let json = s.status(&[]);
    assert_eq!(json["counts"].as_array().map(Vec::len), Some(0));
    assert!(json["oldest_queued_at"].is_null());
}

#[test]
fn status_filters_and_json_round_trip_the_fields() {
    let s = Scratch::new();
    s.cmd(&[
        "enqueue",
        "--tag",
        "a",
        "https://cdn.example.com/one.js",
        "https://cdn.example.com/two.js",
    ])
    .assert()
    .success();
    s.cmd(&[
        "enqueue",
        "--tag",
        "b",
        "--dir",
        "https://cdn.example.com/d/",
    ])
    .assert()
    .success();
    s.cmd(&["enqueue", "--provider", "123pan"])
        .assert()
        .success();

    let by_tag = s.jobs(&["--tag", "a"]);
    assert_eq!(by_tag.len(), 2);
    let job = &by_tag[0];
    for field in [
        "id",
        "provider",
        "account",
        "action",
        "target",
        "tag",
        "state",
        "attempts",
        "next_at",
        "created_at",
        "updated_at",
    ] {
        assert!(!job[field].is_null(), "{field} missing in {job}");
    }
    assert_eq!(job["target"], "https://cdn.example.com/one.js");
    assert!(
        job["created_at"].as_str().unwrap().ends_with('Z'),
        "RFC 3339 UTC"
    );

    assert_eq!(s.jobs(&["--url", "two.js"]).len(), 1);
    assert_eq!(s.jobs(&["--provider", "123pan"]).len(), 1);
    assert_eq!(s.jobs(&["--state", "queued"]).len(), 4);
    assert_eq!(s.jobs(&["--state", "failed"]).len(), 0);
    assert_eq!(s.jobs(&["--since", "1h"]).len(), 4);
    let limited = s.json(&["status", "--limit", "2"]);
    assert_eq!(limited["jobs"].as_array().map(Vec::len), Some(2));

    let summary = s.status(&[]);
    assert_eq!(count(&summary, "qiniu", "queued"), 3);
    assert_eq!(count(&summary, "123pan", "queued"), 1);
    assert!(summary["oldest_queued_age_secs"].as_i64().is_some());

    let id = job["id"].as_i64().unwrap().to_string();
    let detail = s.json(&["status", &id]);
    assert_eq!(detail["job"]["target"], "https://cdn.example.com/one.js");
    assert_eq!(detail["calls"].as_array().map(Vec::len), Some(0));

    let text = stdout(&s.cmd(&["status"]).output().unwrap());
    assert!(
        text.contains("PROVIDER") && text.contains("qiniu") && text.contains("123pan"),
        "{text}"
    );
    let out = s.cmd(&["status", "999"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(stderr(&out).contains("no job 999"));
}

#[test]
fn cancel_changes_only_queued_jobs_and_refuses_the_rest_atomically() {
    let s = Scratch::new();
    let first = ids(&s.json(&[
        "enqueue",
        "https://cdn.example.com/1",
        "https://cdn.example.com/2",
        "https://cdn.example.com/3",
    ]));
    let (a, b, c) = (
        first[0].to_string(),
        first[1].to_string(),
        first[2].to_string(),
    );
    assert_eq!(s.json(&["cancel", &a])["changed"], 1);

    // One refused id (already cancelled) and one unknown: nothing changes.
    let out = s.cmd(&["cancel", &b, &a, "12345"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "cannot cancel job {a}: it already ended (cancelled)"
        )),
        "{err}"
    );
    assert!(
        err.contains("cannot cancel job 12345: no such job"),
        "{err}"
    );
    assert!(err.contains("nothing was changed"));
    let states: Vec<String> = s
        .jobs(&[])
        .iter()
        .map(|j| j["state"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(states, ["cancelled", "queued", "queued"]);

    assert_eq!(s.json(&["cancel", &c])["changed"], 1);
    assert_eq!(count(&s.status(&[]), "qiniu", "cancelled"), 2);
}

#[test]
fn cancel_all_by_tag_and_retry_brings_cancelled_jobs_back() {
    let s = Scratch::new();
    s.cmd(&[
        "enqueue",
        "--tag",
        "x",
        "https://cdn.example.com/1",
        "https://cdn.example.com/2",
    ])
    .assert()
    .success();
    s.cmd(&["enqueue", "--tag", "y", "https://cdn.example.com/3"])
        .assert()
        .success();
    assert_eq!(s.json(&["cancel", "--all", "--tag", "x"])["changed"], 2);
    let status = s.status(&[]);
    assert_eq!(count(&status, "qiniu", "cancelled"), 2);
    assert_eq!(count(&status, "qiniu", "queued"), 1);

    let retried = s.json(&["retry", "--all", "--tag", "x"]);
    assert_eq!(retried["changed"], 2);
    let jobs = s.jobs(&["--tag", "x"]);
    assert!(
        jobs.iter()
            .all(|j| j["state"] == "queued" && j["attempts"] == 0 && j["finished_at"].is_null())
    );

    let id = jobs[0]["id"].as_i64().unwrap().to_string();
    let out = s.cmd(&["retry", &id]).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(stderr(&out).contains("already queued"), "{}", stderr(&out));
    let out = s.cmd(&["retry"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "retry needs ids or --all");
}

#[test]
fn prune_deletes_only_old_finished_jobs() {
    let s = Scratch::new();
    let done = ids(&s.json(&[
        "enqueue",
        "https://cdn.example.com/1",
        "https://cdn.example.com/2",
    ]));
    s.cmd(&["enqueue", "https://cdn.example.com/keep"])
        .assert()
        .success();
    s.cmd(&["cancel", &done[0].to_string(), &done[1].to_string()])
        .assert()
        .success();

    let none = s.json(&["prune", "--older-than", "1h"]);
    assert_eq!(none["jobs"], 0);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let pruned = s.json(&["prune", "--older-than", "1ms"]);
    assert_eq!(pruned["jobs"], 2);
    let left = s.jobs(&[]);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["target"], "https://cdn.example.com/keep");
    assert_eq!(left[0]["state"], "queued");
}

#[test]
fn completions_and_the_man_page_come_from_the_command_definitions() {
    let s = Scratch::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = s.cmd(&["completions", shell]).output().unwrap();
        assert!(out.status.success());
        let script = stdout(&out);
        assert!(
            script.contains("enqueue") && script.contains("max-attempts"),
            "{shell}"
        );
    }
    let man = stdout(&s.cmd(&["man"]).output().unwrap());
    assert!(
        man.starts_with(".ie") || man.contains(".TH purgeq"),
        "{}",
        &man[..200.min(man.len())]
    );
    assert!(man.contains("enqueue") && man.contains("STATE_DIRECTORY"));
    let out = s.cmd(&["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
