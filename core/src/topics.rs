//! Topic names and their settings (DESIGN §3).

/// One topic inlet uses, with the settings it is created with on a real broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Full name, prefix included.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
    /// `retention.ms`; `-1` keeps records forever.
    pub retention_ms: i64,
    /// `cleanup.policy=compact`: only the latest record per key is kept (state topics).
    pub compacted: bool,
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The topic names under one prefix (default `inlet.`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    /// Topics under `prefix`, e.g. `inlet.`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Topics {
            prefix: prefix.into(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The control log: one partition, kept forever.
    pub fn control(&self) -> String {
        format!("{}control", self.prefix)
    }

    /// Snapshots of the folded control log (`snapshot/<N>/<i>` chunks and manifests); compacted.
    /// Several partitions, so a snapshot larger than one partition of the embedded broker holds
    /// (5 MiB) fits: chunks go round robin to partitions 1.., manifests to partition 0.
    pub fn control_snapshots(&self) -> String {
        format!("{}control-snapshots", self.prefix)
    }

    /// Raw authenticated webhooks, keyed by integration/project/repo.
    pub fn webhooks(&self) -> String {
        format!("{}webhooks", self.prefix)
    }

    /// Stack triggers, keyed by stack id.
    pub fn triggers(&self) -> String {
        format!("{}triggers", self.prefix)
    }

    /// Run decisions, keyed by stack id: the downstream contract.
    pub fn runs(&self) -> String {
        format!("{}runs", self.prefix)
    }

    /// What run schedulers report back about runs, keyed by stack id.
    pub fn run_updates(&self) -> String {
        format!("{}run-updates", self.prefix)
    }

    /// What each stage did with each delivery.
    pub fn deliveries(&self) -> String {
        format!("{}deliveries", self.prefix)
    }

    /// Records a stage could not process.
    pub fn dlq(&self) -> String {
        format!("{}dlq", self.prefix)
    }

    /// The router's last-seen branch heads and pull-request commits (reconciliation), keyed
    /// per head; compacted, so it holds one record per head that stacks track.
    pub fn heads(&self) -> String {
        format!("{}heads", self.prefix)
    }

    /// The topics `stage` reads or writes (`ingest`, `router`, `workers`, `reporter`; any other
    /// name: all of them), with their creation settings. A stage checks and creates only these:
    /// it needs no rights on the others, and a missing topic of another stage does not hold up
    /// its start.
    pub fn specs_for(&self, stage: &str) -> Vec<TopicSpec> {
        let used: Vec<String> = match stage {
            // Webhooks in; the admin API's control log, manual runs and the delivery log.
            "ingest" => vec![
                self.control(),
                self.control_snapshots(),
                self.webhooks(),
                self.triggers(),
                self.deliveries(),
            ],
            "router" => vec![
                self.control(),
                self.control_snapshots(),
                self.webhooks(),
                self.triggers(),
                self.deliveries(),
                self.dlq(),
                self.heads(),
            ],
            "workers" => vec![
                self.control(),
                self.control_snapshots(),
                self.triggers(),
                self.runs(),
                self.deliveries(),
                self.dlq(),
            ],
            "reporter" => vec![
                self.control(),
                self.control_snapshots(),
                self.runs(),
                self.run_updates(),
                self.deliveries(),
                self.dlq(),
            ],
            _ => return self.specs(),
        };
        self.specs()
            .into_iter()
            .filter(|spec| used.contains(&spec.name))
            .collect()
    }

    /// Every topic with its creation settings.
    pub fn specs(&self) -> Vec<TopicSpec> {
        let spec = |name: String, partitions, retention_ms| TopicSpec {
            name,
            partitions,
            retention_ms,
            compacted: false,
        };
        vec![
            spec(self.control(), 1, -1),
            TopicSpec {
                compacted: true,
                ..spec(self.control_snapshots(), 12, -1)
            },
            spec(self.webhooks(), 12, 7 * DAY_MS),
            spec(self.triggers(), 12, 7 * DAY_MS),
            spec(self.runs(), 12, 7 * DAY_MS),
            spec(self.deliveries(), 6, 7 * DAY_MS),
            spec(self.run_updates(), 12, 7 * DAY_MS),
            spec(self.dlq(), 1, 30 * DAY_MS),
            TopicSpec {
                compacted: true,
                ..spec(self.heads(), 12, -1)
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each stage checks only its own topics; together they cover every topic.
    #[test]
    fn stages_use_their_own_topics() {
        let topics = Topics::new("inlet.");
        let names = |stage: &str| -> Vec<String> {
            topics
                .specs_for(stage)
                .into_iter()
                .map(|s| s.name)
                .collect()
        };
        assert_eq!(
            names("ingest"),
            [
                "inlet.control",
                "inlet.control-snapshots",
                "inlet.webhooks",
                "inlet.triggers",
                "inlet.deliveries"
            ]
        );
        assert!(!names("ingest").contains(&"inlet.heads".to_owned()));
        assert!(names("router").contains(&"inlet.heads".to_owned()));
        let mut covered: Vec<String> = ["ingest", "router", "workers", "reporter"]
            .iter()
            .flat_map(|stage| names(stage))
            .collect();
        covered.sort();
        covered.dedup();
        let mut all = names("dev");
        all.sort();
        assert_eq!(covered, all);
    }

    /// Names and partition counts follow DESIGN §3.
    #[test]
    fn design_table() {
        let topics = Topics::new("inlet.");
        let specs = topics.specs();
        let summary: Vec<_> = specs
            .iter()
            .map(|s| (s.name.as_str(), s.partitions))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("inlet.control", 1),
                ("inlet.control-snapshots", 12),
                ("inlet.webhooks", 12),
                ("inlet.triggers", 12),
                ("inlet.runs", 12),
                ("inlet.deliveries", 6),
                ("inlet.run-updates", 12),
                ("inlet.dlq", 1),
                ("inlet.heads", 12),
            ]
        );
        assert_eq!(specs[0].retention_ms, -1);
        assert!(specs.iter().all(
            |s| s.compacted == (s.name == "inlet.heads" || s.name == "inlet.control-snapshots")
        ));
    }
}
