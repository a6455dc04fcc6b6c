//! Holder metadata: who holds a grant, as the holder described itself — host name, process
//! id, an optional label and an election leader's value — stored with every new grant as JSON (`meta` in the lock
//! hash; PROTOCOL.md gives the field types) and read back by inspection.

use serde::{Deserialize, Serialize};

/// Who holds a lock, as the holder described itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HolderMetadata {
    /// Host name of the holder's machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Process id of the holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// A label given by the holder (e.g. a job name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// An election leader's proclaimed value (see
    /// [`Election::value`](crate::Election::value)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl HolderMetadata {
    /// This process's metadata: host name and pid, with an optional label.
    pub fn this_process(label: Option<&str>) -> Self {
        HolderMetadata {
            host: host_name(),
            pid: Some(std::process::id()),
            label: label.map(str::to_string),
            value: None,
        }
    }

    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The machine's host name (the kernel's, as `hostname(1)` prints it), read once per client.
fn host_name() -> Option<String> {
    gethostname::gethostname()
        .into_string()
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}
