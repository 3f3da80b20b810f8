//! Micro-benchmark of routing a push: the per-event cost must stay flat as the registry grows,
//! because stacks are found through the (integration, repository) index, never by a scan.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use inlet_bitbucket::parse_refs_changed;
use inlet_control::commands::ControlCommand;
use inlet_control::registry::Registry;
use inlet_control::testing;
use inlet_core::records::Delivery;
use inlet_router::route::route_push;

/// `stacks` stacks spread 10 per repository.
fn registry(stacks: usize) -> Registry {
    let mut commands = vec![ControlCommand::CreateIntegration {
        integration: testing::integration("bb", "i1", "root", true, "secret"),
    }];
    for i in 0..stacks {
        let branch = if i % 10 == 0 {
            "main".to_owned()
        } else {
            format!("env-{}", i % 10)
        };
        commands.push(ControlCommand::CreateStack {
            stack: testing::stack(
                &format!("s{i}"),
                "bb",
                &format!("BENCH/repo-{}", i / 10),
                &branch,
            ),
        });
    }
    testing::registry(commands)
}

fn route(c: &mut Criterion) {
    let push = parse_refs_changed(
        br#"{"actor": {"name": "alice"},
             "repository": {"slug": "repo-7", "project": {"key": "BENCH"}},
             "changes": [{"ref": {"id": "refs/heads/main", "displayId": "main", "type": "BRANCH"},
                          "fromHash": "1111111111111111111111111111111111111111",
                          "toHash": "2222222222222222222222222222222222222222", "type": "UPDATE"}]}"#,
    )
    .expect("push");
    let delivery = Delivery {
        delivery_id: "d1".to_owned(),
        event_key: "repo:refs_changed".to_owned(),
        integration: "bb".to_owned(),
        received_at: "2026-01-01T00:00:00Z".to_owned(),
        control_offset: 0,
    };
    let mut group = c.benchmark_group("route_push_10_stacks_on_repo");
    for stacks in [1_000usize, 10_000, 100_000] {
        let registry = registry(stacks);
        group.bench_with_input(
            BenchmarkId::from_parameter(stacks),
            &registry,
            |b, registry| {
                b.iter(|| {
                    let routed = route_push(registry, &delivery, &push);
                    assert_eq!(routed.triggers.len(), 10);
                    routed
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, route);
criterion_main!(benches);
