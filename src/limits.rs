//! The bounds every backend enforces.

use std::io;

use crate::error::{Error, Result};
use crate::task::Task;

/// Default cap on active (non-terminal) tasks.
pub const DEFAULT_MAX_ACTIVE: usize = 10_000;
/// Default cap on one task's encoded size: 16 MiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;

/// The caps a backend enforces; hitting one is a typed error that changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub max_active: usize,
    pub max_payload_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_active: DEFAULT_MAX_ACTIVE,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
        }
    }
}

impl Limits {
    /// Encodes `task` as JSON, refusing it if it is over the payload cap.
    pub fn encode(&self, task: &Task) -> Result<Vec<u8>> {
        let bytes = serde_json::to_vec(task).map_err(|source| Error::Encode {
            id: task.id.clone(),
            source,
        })?;
        self.check_size(task, bytes.len())?;
        Ok(bytes)
    }

    /// Refuses `task` if its JSON would be over the payload cap, without
    /// keeping the encoding.
    pub fn check(&self, task: &Task) -> Result<()> {
        let mut counter = Counter(0);
        serde_json::to_writer(&mut counter, task).map_err(|source| Error::Encode {
            id: task.id.clone(),
            source,
        })?;
        self.check_size(task, counter.0)
    }

    fn check_size(&self, task: &Task, size: usize) -> Result<()> {
        if size > self.max_payload_bytes {
            return Err(Error::PayloadTooLarge {
                id: task.id.clone(),
                size,
                limit: self.max_payload_bytes,
            });
        }
        Ok(())
    }
}

struct Counter(usize);

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
