//! The ready file: written once a process is ready, read by scripts, tests and `inlet bench`.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// What a ready process tells scripts (DESIGN §4.4). Keys that do not apply to a stage are omitted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyInfo {
    /// `http://host:port` of the webhook listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_base_url: Option<String>,
    /// `http://host:port` of the admin API listener (the API is under `/api/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_base_url: Option<String>,
    /// The bootstrap root-admin key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_key: Option<String>,
    /// Where the Kafka brokers are.
    pub kafka_bootstrap_servers: String,
    /// The topic prefix.
    pub topic_prefix: String,
}

impl ReadyInfo {
    /// Writes the file atomically (temporary file, then rename), so readers never see half of it.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, path)
    }
}
