//! How long a process takes to fold `inlet.control` at startup, and what a repository lookup costs
//! on the folded registry.
//!
//! The log is generated once, as the JSON records sit on the topic: about 50 spaces in a tree (some
//! inheriting), 1,000 integrations (one default in `root`, the rest spread over the spaces, webhook
//! secrets and half of the access tokens sealed), 101,000 stack creations on 10,000 repositories,
//! then 5,000 stack updates, 1,000 stack deletions, 100 integration updates, 20 secret rotations
//! and 10 API keys, interleaved. The folded registry holds 100,000 stacks. Every command is
//! accepted: the set-up folds the log once and panics on the first rejection.
//!
//! Run with `cargo bench -p inlet-core --bench fold`. Benchmarks:
//!
//! - `control_fold/parse_and_apply`: what a starting process does, parse every record with
//!   serde_json and `Registry::apply` it to a fresh registry;
//! - `control_fold/parse_only` and `control_fold/apply_only`: the two halves, to see where the
//!   time goes;
//! - `stacks_on_repository/{hit,miss}/<n>_stacks`: one indexed lookup on registries of 1,000,
//!   10,000 and 100,000 stacks, ten stacks per repository in each (about 2.4 share an integration,
//!   so a hit returns that many). Finding the index entry (`miss`) should not grow with the registry;
//!   a hit also resolves each returned stack id in the ordered stack map.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use inlet_control::commands::{
    CONTROL_SCHEMA, ControlCommand, ControlRecord, IntegrationPatch, StackPatch, StackSpec,
};
use inlet_control::crypto::{Sealed, SecretsKey};
use inlet_control::domain::{ApiKey, Integration, ROOT_SPACE, Role, RoleBinding, Space};
use inlet_control::registry::{Registry, RegistrySizes};
use inlet_core::secret::Secret;

/// Spaces besides `root`.
const SPACES: usize = 50;
/// Integrations, the default one included.
const INTEGRATIONS: usize = 1_000;
/// Stacks left after the log is folded.
const STACKS: usize = 100_000;
/// Distinct repositories the 100,000 stacks are spread over (smaller logs keep ten stacks per
/// repository).
const REPOSITORIES: usize = 10_000;
/// Stack updates appended after the creations.
const STACK_UPDATES: usize = 5_000;
/// API keys created.
const API_KEYS: usize = 10;

/// A small deterministic generator (splitmix64), so every run folds the same log shape.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn token(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| ALPHABET[self.below(ALPHABET.len())] as char)
            .collect()
    }
}

/// Builds records the way `ControlLog::append` does: a fresh command id, the origin process, the
/// issue time and the actor around each command.
struct Writer {
    rng: Rng,
    origins: Vec<String>,
    seconds: u64,
    records: Vec<Vec<u8>>,
}

impl Writer {
    fn push(&mut self, command: ControlCommand) {
        self.seconds += 7;
        let (day, rest) = (self.seconds / 86_400, self.seconds % 86_400);
        let issued_at = format!(
            "2026-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            1 + (day / 28) % 12,
            1 + day % 28,
            rest / 3600,
            (rest / 60) % 60,
            rest % 60,
            self.rng.below(1000)
        );
        let origin = self.origins[self.rng.below(self.origins.len())].clone();
        let actor = if self.rng.below(10) == 0 {
            "bootstrap".to_owned()
        } else {
            format!("key-{:02}", self.rng.below(API_KEYS))
        };
        let record = ControlRecord {
            schema: CONTROL_SCHEMA.to_owned(),
            command_id: self.rng.token(16),
            origin,
            issued_at,
            actor,
            command,
        };
        self.records
            .push(serde_json::to_vec(&record).expect("serialise a control record"));
    }
}

/// The generated log and what folding it must yield.
struct Log {
    records: Vec<Vec<u8>>,
    expected: RegistrySizes,
}

impl Log {
    fn bytes(&self) -> usize {
        self.records.iter().map(Vec::len).sum()
    }
}

fn space_id(index: usize) -> String {
    format!("team-{index:02}")
}

/// The parent of space `index`: five top-level spaces, then three children per space.
fn space_parent(index: usize) -> Option<usize> {
    index.checked_sub(5).map(|i| i / 3)
}

/// Two spaces in three inherit their parent's entities.
fn space_inherits(index: usize) -> bool {
    !index.is_multiple_of(3)
}

/// The space that holds integration `index` (>= 1): `None` is `root`.
fn integration_space(index: usize) -> Option<usize> {
    let slot = index % (SPACES + 1);
    (slot < SPACES).then_some(slot)
}

fn integration_name(index: usize) -> String {
    if index == 0 {
        "bitbucket".to_owned()
    } else {
        format!("bitbucket-{index:03}")
    }
}

fn repository(index: usize) -> String {
    format!("PRJ{:03}/service-{index:05}", index % 250)
}

/// Generates a log that folds to `stacks` stacks (plus the deleted ones in between).
fn generate(stacks: usize) -> Log {
    let key = SecretsKey::parse(&"5a".repeat(32)).expect("a 32-byte hex key");
    // The commands' contents come from `rng`, the envelopes from the writer's own generator.
    let mut rng = Rng(0x5eed);
    let mut writer = Writer {
        rng: Rng(0x1e7),
        origins: Vec::new(),
        seconds: 0,
        records: Vec::new(),
    };
    writer.origins = (0..4).map(|_| rng.token(11)).collect();

    for index in 0..SPACES {
        writer.push(ControlCommand::CreateSpace {
            space: Space {
                id: space_id(index),
                name: format!("Team {index}"),
                parent_id: Some(
                    space_parent(index).map_or_else(|| ROOT_SPACE.to_owned(), space_id),
                ),
                inherit_entities: space_inherits(index),
            },
        });
    }

    for index in 0..API_KEYS {
        let space = if index == 0 {
            ROOT_SPACE.to_owned()
        } else {
            space_id(index * 4)
        };
        writer.push(ControlCommand::CreateApiKey {
            key: ApiKey {
                id: format!("key-{index:02}"),
                name: format!("automation {index}"),
                secret_sha256: hex_token(&mut rng),
                bindings: vec![RoleBinding {
                    space_id: space,
                    role: Role::Admin,
                }],
                created_at: "2026-01-01T00:00:00Z".to_owned(),
            },
        });
    }

    // Integrations available per space: (name) lists, indexed by space (`SPACES` is root).
    let mut by_space: Vec<Vec<String>> = vec![Vec::new(); SPACES + 1];
    // Incarnation id of each integration, for the context rotated secrets are sealed for.
    let mut integration_ids = Vec::with_capacity(INTEGRATIONS);
    for index in 0..INTEGRATIONS {
        let space = if index == 0 {
            None
        } else {
            integration_space(index)
        };
        let mut integration = Integration {
            name: integration_name(index),
            id: format!("int-{}", rng.token(20)),
            is_default: index == 0,
            space_id: space.map_or_else(|| ROOT_SPACE.to_owned(), space_id),
            api_host_url: format!("https://bitbucket-{}.example.com", index % 7),
            user_facing_host_url: format!("https://bitbucket-{}.example.com", index % 7),
            username: "inlet-bot".to_owned(),
            access_token: Sealed::default(),
            labels: vec!["bitbucket".to_owned(), format!("site-{}", index % 7)],
            description: format!("Bitbucket Data Center for team {}", index % SPACES),
            webhook_secret: Sealed::default(),
            previous_webhook_secret: None,
            older_webhook_secrets: vec![],
            created_at: "2026-01-01T00:00:00Z".to_owned(),
        };
        integration.webhook_secret = key.seal(
            &Secret::new(rng.token(32)),
            &integration.webhook_secret_context(),
        );
        if index % 2 == 0 {
            integration.access_token = key.seal(
                &Secret::new(format!("BBDC-{}", rng.token(44))),
                &integration.access_token_context(),
            );
        }
        integration_ids.push(integration.id.clone());
        if index > 0 {
            by_space[space.unwrap_or(SPACES)].push(integration.name.clone());
        }
        writer.push(ControlCommand::CreateIntegration { integration });
    }

    // Stacks: every 101st is deleted later, so create enough for `stacks` to remain.
    let repositories = (stacks * REPOSITORIES / STACKS).max(1);
    let deleted = stacks / 100;
    let created = stacks + deleted;
    let mut stack_spaces = Vec::with_capacity(created);
    for index in 0..created {
        let space = index % (SPACES + 1);
        let integration = pick_integration(&mut rng, &by_space, space);
        let repository = repository(index % repositories);
        let branch = match rng.below(10) {
            0 => "develop".to_owned(),
            1 => format!("release/{}", rng.below(20)),
            _ => "main".to_owned(),
        };
        writer.push(ControlCommand::CreateStack {
            stack: StackSpec {
                id: format!("stack-{index:06}"),
                name: format!("{} {}", repository, ["prod", "staging", "dev"][index % 3]),
                space_id: if space == SPACES {
                    ROOT_SPACE.to_owned()
                } else {
                    space_id(space)
                },
                integration,
                repository,
                branch,
                project_root: format!("environments/{}", ["prod", "staging", "dev"][index % 3]),
                additional_project_globs: vec![],
                labels: vec![
                    format!("team-{:02}", space),
                    ["terraform", "opentofu", "pulumi"][rng.below(3)].to_owned(),
                ],
                disabled: rng.below(50) == 0,
            },
        });
        stack_spaces.push(space);
    }

    // Then updates and deletions, interleaved, plus some integration changes.
    let updates = STACK_UPDATES * stacks / STACKS;
    let mut pending_deletes = (0..created).step_by(101).take(deleted);
    for step in 0..updates {
        let target = loop {
            let candidate = rng.below(created);
            if !candidate.is_multiple_of(101) || candidate / 101 >= deleted {
                break candidate;
            }
        };
        let mut patch = StackPatch::default();
        match step % 5 {
            0 => patch.branch = Some("main".to_owned()),
            1 => patch.labels = Some(vec!["terraform".to_owned(), "reviewed".to_owned()]),
            2 => patch.disabled = Some(step % 2 == 0),
            3 => patch.repository = Some(repository(rng.below(repositories))),
            _ => {
                patch.integration =
                    Some(pick_integration(&mut rng, &by_space, stack_spaces[target]))
            }
        }
        writer.push(ControlCommand::UpdateStack {
            id: format!("stack-{target:06}"),
            patch,
        });
        if step % 5 == 4
            && let Some(doomed) = pending_deletes.next()
        {
            writer.push(ControlCommand::DeleteStack {
                id: format!("stack-{doomed:06}"),
            });
        }
        if step % 50 == 0 {
            writer.push(ControlCommand::UpdateIntegration {
                name: integration_name(1 + rng.below(INTEGRATIONS - 1)),
                patch: IntegrationPatch {
                    description: Some("Owned by the platform team".to_owned()),
                    labels: Some(vec!["bitbucket".to_owned(), "reviewed".to_owned()]),
                    ..IntegrationPatch::default()
                },
            });
        }
        if step % 250 == 0 {
            let index = 1 + rng.below(INTEGRATIONS - 1);
            writer.push(ControlCommand::RotateWebhookSecret {
                name: integration_name(index),
                secret: key.seal(
                    &Secret::new(rng.token(32)),
                    &format!("webhook_secret/{}", integration_ids[index]),
                ),
                previous_valid_until: "2026-02-01T00:00:00Z".to_owned(),
                integration_id: Some(integration_ids[index].clone()),
            });
        }
    }
    for doomed in pending_deletes {
        writer.push(ControlCommand::DeleteStack {
            id: format!("stack-{doomed:06}"),
        });
    }

    Log {
        records: writer.records,
        expected: RegistrySizes {
            spaces: SPACES + 1,
            integrations: INTEGRATIONS,
            stacks,
            api_keys: API_KEYS,
        },
    }
}

fn hex_token(rng: &mut Rng) -> String {
    (0..4).map(|_| format!("{:016x}", rng.next())).collect()
}

/// An integration a stack in `space` (`SPACES` is root) may attach: the default one, one of its
/// own space, or one of an ancestor reached through inheriting spaces.
fn pick_integration(rng: &mut Rng, by_space: &[Vec<String>], space: usize) -> String {
    let mut reachable = vec![space];
    if space < SPACES {
        let mut current = space;
        while space_inherits(current) {
            match space_parent(current) {
                Some(parent) => {
                    reachable.push(parent);
                    current = parent;
                }
                None => {
                    reachable.push(SPACES);
                    break;
                }
            }
        }
    }
    let roll = rng.below(10);
    let chosen = if roll < 4 {
        None
    } else if roll < 9 {
        Some(space)
    } else {
        Some(reachable[rng.below(reachable.len())])
    };
    match chosen.map(|s| &by_space[s]) {
        Some(names) if !names.is_empty() => names[rng.below(names.len())].clone(),
        _ => integration_name(0),
    }
}

/// What a starting process does: parse each record and apply it, in order, to a fresh registry.
/// Returns the registry and how many commands were rejected.
fn fold(records: &[Vec<u8>]) -> (Registry, usize) {
    let mut registry = Registry::new();
    let mut rejected = 0;
    for bytes in records {
        let record: ControlRecord = serde_json::from_slice(bytes).expect("parse a control record");
        if registry.apply(&record).is_err() {
            rejected += 1;
        }
    }
    (registry, rejected)
}

/// Folds `log` once, panicking on the first rejection or on unexpected sizes.
fn checked_fold(log: &Log) -> Registry {
    let mut registry = Registry::new();
    for (offset, bytes) in log.records.iter().enumerate() {
        let record: ControlRecord = serde_json::from_slice(bytes).expect("parse a control record");
        if let Err(rejection) = registry.apply(&record) {
            panic!(
                "the generated log is wrong: offset {offset} ({}) rejected: {} ({})",
                record.command.kind(),
                rejection.message,
                rejection.code
            );
        }
    }
    assert_eq!(registry.sizes(), log.expected, "folded sizes");
    registry
}

fn control_fold(c: &mut Criterion) {
    let started = Instant::now();
    let log = generate(STACKS);
    let generated_in = started.elapsed();
    let started = Instant::now();
    let registry = checked_fold(&log);
    let folded_in = started.elapsed();
    let sizes = registry.sizes();
    let bytes = log.bytes();
    eprintln!(
        "control log: {} records, {:.1} MiB of JSON ({} bytes per record on average), generated \
         in {:.1?}; one checked fold in {:.2?} → {} spaces, {} integrations, {} stacks, {} API keys",
        log.records.len(),
        bytes as f64 / (1024.0 * 1024.0),
        bytes / log.records.len(),
        generated_in,
        folded_in,
        sizes.spaces,
        sizes.integrations,
        sizes.stacks,
        sizes.api_keys,
    );
    drop(registry);

    let mut group = c.benchmark_group("control_fold");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(3))
        .measurement_time(Duration::from_secs(25))
        .throughput(Throughput::Elements(log.records.len() as u64));

    group.bench_function("parse_and_apply", |b| {
        b.iter_with_large_drop(|| {
            let (registry, rejected) = fold(black_box(&log.records));
            assert_eq!(rejected, 0, "every command is accepted");
            registry
        })
    });

    group.bench_function("parse_only", |b| {
        b.iter_with_large_drop(|| {
            black_box(&log.records)
                .iter()
                .map(|bytes| serde_json::from_slice(bytes).expect("parse"))
                .collect::<Vec<ControlRecord>>()
        })
    });

    let parsed: Vec<ControlRecord> = log
        .records
        .iter()
        .map(|bytes| serde_json::from_slice(bytes).expect("parse"))
        .collect();
    group.bench_function("apply_only", |b| {
        b.iter_with_large_drop(|| {
            let mut registry = Registry::new();
            for record in black_box(&parsed) {
                let _ = registry.apply(record);
            }
            registry
        })
    });
    group.finish();
}

fn stacks_on_repository(c: &mut Criterion) {
    let mut group = c.benchmark_group("stacks_on_repository");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(5));
    for stacks in [1_000, 10_000, STACKS] {
        let registry = checked_fold(&generate(stacks));
        // Real (integration, repository) pairs, spelled as Bitbucket might: lower-case repository.
        let keys: Vec<(String, String)> = registry
            .stacks()
            .step_by((stacks / 1_000).max(1))
            .map(|s| (s.integration.clone(), s.repository.to_lowercase()))
            .collect();
        let matches: usize = keys
            .iter()
            .map(|(integration, repository)| {
                registry
                    .stacks_on_repository(integration, repository)
                    .count()
            })
            .sum();
        eprintln!(
            "registry of {stacks} stacks: a hit returns {:.1} stacks on average",
            matches as f64 / keys.len() as f64
        );
        let mut next = 0usize;
        group.bench_with_input(
            BenchmarkId::new("hit", format!("{stacks}_stacks")),
            &registry,
            |b, registry| {
                b.iter(|| {
                    let (integration, repository) = &keys[next % keys.len()];
                    next += 1;
                    registry
                        .stacks_on_repository(black_box(integration), black_box(repository))
                        .count()
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("miss", format!("{stacks}_stacks")),
            &registry,
            |b, registry| {
                b.iter(|| {
                    registry
                        .stacks_on_repository(black_box("bitbucket"), black_box("NOPE/nothing"))
                        .count()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, control_fold, stacks_on_repository);
criterion_main!(benches);
