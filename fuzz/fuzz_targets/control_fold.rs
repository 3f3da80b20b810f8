//! Fuzzes the fold of `inlet.control` (`inlet_control::fold`): every process applies whatever
//! records the control topic holds, so a record nobody validated must not stop a process.
//!
//! What enters: arbitrary bytes, read as one JSON [`ControlRecord`] and, split on `\n`, as up to
//! 16 records folded in order, each into a registry that already holds spaces, integrations,
//! stacks and an API key. What must hold: decoding and [`Registry::apply`] never panic; a
//! rejected record leaves the registry unchanged (the fold's guarantee); every stack stays
//! reachable through the repository index; the read-side queries and access rules never panic
//! on the folded state.

#![no_main]

use inlet_control::access::Principal;
use inlet_control::commands::{ControlCommand, ControlRecord};
use inlet_control::domain::{ApiKey, Role, RoleBinding, Space};
use inlet_control::paths::PathFilter;
use inlet_control::registry::Registry;
use inlet_control::testing;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

/// Records folded per input at most, so one input stays cheap.
const MAX_RECORDS: usize = 16;

/// Paths the filter of each stack an input changed is asked about.
const PATHS: &[&str] = &[
    "",
    "main.tf",
    "infra/app/main.tf",
    "modules/vpc/x.tf",
    "a/b/../c",
];

/// Two spaces under root (one inheriting), the default integration and a space-level one, a stack
/// on each (one with a project root and globs), and an API key bound to a space.
static SEEDED: LazyLock<Registry> = LazyLock::new(|| {
    let space = |id: &str, inherit: bool| ControlCommand::CreateSpace {
        space: Space {
            id: id.to_owned(),
            name: id.to_owned(),
            parent_id: Some("root".to_owned()),
            inherit_entities: inherit,
        },
    };
    let mut app = testing::stack("app", "team-bb", "INFRA/app", "main");
    app.space_id = "team".to_owned();
    app.project_root = "infra/app".to_owned();
    app.additional_project_globs = vec!["modules/**".to_owned(), "!modules/legacy/**".to_owned()];
    testing::registry([
        space("team", true),
        space("ops", false),
        ControlCommand::CreateIntegration {
            integration: testing::integration("bb", "i1", "root", true, "s1"),
        },
        ControlCommand::CreateIntegration {
            integration: testing::integration("team-bb", "i2", "team", false, "s2"),
        },
        ControlCommand::CreateStack {
            stack: testing::stack("net", "bb", "INFRA/network", "main"),
        },
        ControlCommand::CreateStack { stack: app },
        ControlCommand::CreateApiKey {
            key: ApiKey {
                id: "k1".to_owned(),
                name: "ci".to_owned(),
                secret_sha256: "00".repeat(32),
                bindings: vec![RoleBinding {
                    space_id: "team".to_owned(),
                    role: Role::Writer,
                }],
                created_at: "2026-01-01T00:00:00Z".to_owned(),
            },
        },
    ])
});

fuzz_target!(|data: &[u8]| {
    // The whole input as one record.
    if let Ok(record) = serde_json::from_slice::<ControlRecord>(data) {
        let mut registry = SEEDED.clone();
        fold(&mut registry, &record);
        read_side(&registry);
    }
    // Line by line, in order, into one registry.
    let mut registry = SEEDED.clone();
    for line in data.split(|byte| *byte == b'\n').take(MAX_RECORDS) {
        if let Ok(record) = serde_json::from_slice::<ControlRecord>(line) {
            fold(&mut registry, &record);
        }
    }
    read_side(&registry);
});

/// Applies `record` and checks what must hold after every record.
fn fold(registry: &mut Registry, record: &ControlRecord) {
    let _ = record.command.entity_key();
    let _ = record.command.kind();
    let before = registry.clone();
    match registry.apply(record) {
        Ok(_) => {}
        Err(rejection) => {
            assert_eq!(
                *registry, before,
                "rejected {record:?} changed the registry"
            );
            let _ = (rejection.code, rejection.field, rejection.to_string());
        }
    }
    assert!(registry.space("root").is_some(), "the root space is gone");
    for stack in registry.stacks() {
        assert!(
            registry
                .stacks_on_repository(&stack.integration, &stack.repository)
                .any(|indexed| indexed.id == stack.id),
            "stack {} is missing from the repository index",
            stack.id
        );
    }
}

/// The read side on the folded state, once per input. Only stacks the input changed get a path
/// filter: compiling globs is slow, and the seeded ones always compile.
fn read_side(registry: &Registry) {
    for stack in registry.stacks() {
        if SEEDED.stack(&stack.id) == Some(stack) {
            continue;
        }
        let filter = PathFilter::new(&stack.project_root, &stack.additional_project_globs);
        let _ = filter.covers_everything();
        for path in PATHS {
            let _ = filter.covers(path);
        }
    }
    let principals: Vec<Principal> = registry
        .api_keys()
        .map(Principal::of_key)
        .chain([Principal::Bootstrap])
        .collect();
    for principal in &principals {
        let _ = principal.actor();
        for space in registry.spaces() {
            let _ = principal.role_in(registry, &space.id);
            let _ = principal.can_read(registry, &space.id);
        }
        for integration in registry.integrations() {
            let _ = principal.can_see_integration(registry, integration);
            let _ = principal.can_admin_integration(registry, integration);
        }
    }
    for integration in registry.integrations() {
        for space in registry.spaces() {
            let _ = registry.is_available(integration, &space.id);
        }
    }
    let _ = registry.default_integration();
}
