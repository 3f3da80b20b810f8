//! A synthetic control log of realistic shape, for benchmarks (`cargo bench -p inlet-control
//! --bench fold`, `inlet bench --registry-scale`) and scale tests: about 50 spaces in a tree (some
//! inheriting), 1,000 integrations (one default in `root`, the rest spread over the spaces, webhook
//! secrets and half of the access tokens sealed), stack creations on repositories, then stack
//! updates and deletions, integration updates, secret rotations and API keys, interleaved. With
//! [`STACKS`] stacks it is 108,180 records (43 MiB of JSON). Every command is accepted by the fold.
//!
//! Enters: the number of stacks wanted. Leaves: the serialized records, in log order, and the
//! registry sizes folding them must give. Deterministic: the same call gives the same bytes.

use crate::commands::{
    CONTROL_SCHEMA, ControlCommand, ControlRecord, IntegrationPatch, StackPatch, StackSpec,
};
use crate::crypto::{Sealed, SecretsKey};
use crate::domain::{ApiKey, Integration, ROOT_SPACE, Role, RoleBinding, Space};
use crate::registry::RegistrySizes;
use inlet_core::secret::Secret;

/// Spaces besides `root`.
pub const SPACES: usize = 50;
/// Integrations, the default one included.
pub const INTEGRATIONS: usize = 1_000;
/// Stacks left after the log is folded.
pub const STACKS: usize = 100_000;
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
pub struct Log {
    /// The serialized `ControlRecord`s, in log order.
    pub records: Vec<Vec<u8>>,
    /// What folding them gives.
    pub expected: RegistrySizes,
}

impl Log {
    /// Bytes of JSON in all records.
    pub fn bytes(&self) -> usize {
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
pub fn generate(stacks: usize) -> Log {
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
