//! TEMPORARY stub; the real spool lands from its branch.
use std::path::{Path, PathBuf};

pub struct Spool {}
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool is full ({used} of {max} bytes)")]
    Full { used: u64, max: u64 },
    #[error("spool I/O error in {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}
#[derive(Debug, Default)]
pub struct ReplayStats {
    pub records: u64,
    pub bytes: u64,
    pub torn: u64,
}
impl Spool {
    pub fn open(_dir: &Path, _max_bytes: u64) -> Result<Spool, SpoolError> {
        Ok(Spool {})
    }
    pub fn append(&mut self, _payload: &[u8]) -> Result<(), SpoolError> {
        Ok(())
    }
    pub fn bytes(&self) -> u64 {
        0
    }
    pub fn is_empty(&self) -> bool {
        true
    }
    pub fn replay<E>(
        &mut self,
        _deliver: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<ReplayStats, E> {
        Ok(ReplayStats::default())
    }
}
