//! Containers that exit as soon as they start (issue 15, item 7): the exit races
//! StartContainer's own bookkeeping, and kraald restarts. Whatever the interleaving, every
//! exit must be recorded with its real code and announced with a STOPPED event; kubelet would
//! never restart a container whose exit was lost, and a Job would never finish.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kraal_e2e::{Kraald, cri, pod_config, shell_container};

/// Long enough for any recorded exit to show; an exit that was lost never does.
const DEADLINE: Duration = Duration::from_secs(120);
/// Containers started at once, and how many such batches. The race of a start with its own
/// exit is lost only now and then (seen in 2 of 7 runs of one batch on a loaded 2-core
/// machine); the resource-update test below loses it every time on broken code.
const BATCH: usize = 30;
const ROUNDS: usize = 2;

/// Threads spinning on every core the test can have, so kraald's threads get preempted
/// between steps as on a loaded node (where the lost exit was first seen).
struct BusyCores {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BusyCores {
    fn start(n: usize) -> BusyCores {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        BusyCores { stop, threads }
    }
}

impl Drop for BusyCores {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// `true` and `exit 3` alternately: (script, exit code, reason).
fn fast(i: usize) -> (&'static str, i32, &'static str) {
    if i.is_multiple_of(2) {
        ("true", 0, "Completed")
    } else {
        ("exit 3", 3, "Error")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_fast_exit_is_recorded_with_its_code_and_a_stopped_event() {
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let pod_cfg = pod_config("fast-exits", true);
    let pod = kraald.run_pod(pod_cfg.clone()).await.unwrap();
    let mut events = kraald
        .runtime()
        .await
        .get_container_events(cri::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();

    let busy = BusyCores::start(2);
    let mut expected = HashMap::new();
    for round in 0..ROUNDS {
        let mut batch = Vec::new();
        for i in 0..BATCH {
            let (script, code, reason) = fast(i);
            let name = format!("fast-{round}-{i}");
            let config = shell_container(&name, &image, script);
            let id = kraald
                .create(&pod, &pod_cfg, config)
                .await
                .unwrap_or_else(|s| panic!("CreateContainer: {s:?}\n{}", kraald.log()));
            expected.insert(id.clone(), (code, reason));
            batch.push(id);
        }
        // A batch at once: each start races its own container's exit and the other starts.
        let starts = futures::future::join_all(batch.iter().map(|id| kraald.start_container(id)));
        for (id, result) in batch.iter().zip(starts.await) {
            if let Err(s) = result {
                panic!("StartContainer {id}: {s:?}\n{}", kraald.log());
            }
        }
    }

    let deadline = Instant::now() + DEADLINE;
    let mut stopped: HashMap<String, usize> = HashMap::new();
    while expected.keys().any(|id| !stopped.contains_key(id)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.message()).await {
            Ok(Ok(Some(event))) => {
                if event.container_event_type
                    == cri::ContainerEventType::ContainerStoppedEvent as i32
                {
                    *stopped.entry(event.container_id).or_default() += 1;
                }
            }
            other => {
                let missing: Vec<_> = expected
                    .keys()
                    .filter(|id| !stopped.contains_key(*id))
                    .collect();
                panic!(
                    "no STOPPED event for {missing:?} ({other:?})\n{}",
                    kraald.log()
                );
            }
        }
    }
    // Every StartContainer has answered (so saved what it saves) and every exit has been
    // announced: nothing may change these records any more, so they are checked as they are.
    for (id, (code, reason)) in &expected {
        let s = kraald.container_status(id).await;
        assert_eq!(
            s.state,
            cri::ContainerState::ContainerExited as i32,
            "{id} is not EXITED after its STOPPED event: {s:?}"
        );
        assert_eq!(
            (s.exit_code, s.reason.as_str()),
            (*code, *reason),
            "{id}: {s:?}"
        );
        assert!(
            s.started_at > 0 && s.finished_at >= s.started_at,
            "{id}: {s:?}"
        );
    }
    drop(busy);
    assert!(
        !kraald.log().contains("cannot save the container's exit"),
        "{}",
        kraald.log()
    );
    kraald.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exit_is_not_lost_to_resource_updates_running_at_the_same_time() {
    // kubelet may update a container's resources at any moment, also while it exits: the
    // update and the exit change one record at once, and both changes must land.
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let pod_cfg = pod_config("updated-exits", true);
    let pod = kraald.run_pod(pod_cfg.clone()).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..8 {
        let config = shell_container(&format!("exiting-{i}"), &image, "sleep 1; exit 3");
        ids.push(kraald.run_container(&pod, &pod_cfg, config).await);
    }
    let deadline = Instant::now() + DEADLINE;
    let kraald = &kraald;
    let hammers = ids.iter().map(|id| async move {
        let mut client = kraald.runtime().await;
        let mut n = 0i64;
        // Until the exit shows (refused from then on): a lost exit never shows.
        loop {
            let status = kraald.container_status(id).await;
            if status.state == cri::ContainerState::ContainerExited as i32 {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{id} still {} after {DEADLINE:?}\n{}",
                status.state,
                kraald.log()
            );
            n += 1;
            // Alternating values, so every update really changes the record.
            let _ = client
                .update_container_resources(cri::UpdateContainerResourcesRequest {
                    container_id: id.clone(),
                    linux: Some(cri::LinuxContainerResources {
                        cpu_period: 100_000,
                        cpu_quota: 50_000 + (n % 2) * 10_000,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await;
        }
    });
    for (id, s) in ids.iter().zip(futures::future::join_all(hammers).await) {
        assert_eq!(
            (s.exit_code, s.reason.as_str()),
            (3, "Error"),
            "{id}: {s:?}"
        );
    }
    // Refused now, and the record stays as it is.
    for id in &ids {
        let s = kraald.container_status(id).await;
        assert_eq!(
            s.state,
            cri::ContainerState::ContainerExited as i32,
            "{id}: {s:?}"
        );
    }
    kraald.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fast_exit_while_kraald_is_down_is_reported_after_the_restart() {
    let mut kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let pod_cfg = pod_config("fast-crash", true);
    let pod = kraald.run_pod(pod_cfg.clone()).await.unwrap();
    let busy = BusyCores::start(2);
    for i in 0..20 {
        let (script, code, reason) = fast(i);
        let id = kraald
            .run_container(
                &pod,
                &pod_cfg,
                shell_container(&format!("crash-{i}"), &image, script),
            )
            .await;
        // Killed right after the start: the exit lands while kraald is gone, or while it was
        // still recording the start.
        kraald.kill9();
        kraald.start_again().await;
        let s = kraald.wait_exited(&id, DEADLINE).await;
        assert_eq!(
            (s.exit_code, s.reason.as_str()),
            (code, reason),
            "{id}: {s:?}"
        );
        assert!(
            s.started_at > 0 && s.finished_at >= s.started_at,
            "{id}: {s:?}"
        );
    }
    drop(busy);
    kraald.remove_pod(&pod).await;
}
