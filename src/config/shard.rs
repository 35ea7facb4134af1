//! Sharding: which objects this instance polls when several share the
//! work (`[cluster]`), by a stable hash of the object name.

/// This replica's share: `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Parses `i/n` or `hostname/n` (with the given host name).
    pub fn parse(spec: &str, hostname: &str) -> Result<Shard, String> {
        let (i, n) = spec
            .split_once('/')
            .ok_or_else(|| format!("`{spec}` is not `i/n` or `hostname/n`"))?;
        let count: u32 = n
            .trim()
            .parse()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| format!("`{n}` is not a replica count of at least 1"))?;
        let index: u32 = if i.trim() == "hostname" {
            hostname
                .rsplit_once('-')
                .and_then(|(_, o)| o.parse().ok())
                .ok_or_else(|| {
                    format!("host name `{hostname}` does not end in `-<ordinal>` (as StatefulSet pods do)")
                })?
        } else {
            i.trim()
                .parse()
                .map_err(|_| format!("`{i}` is not a replica index"))?
        };
        if index >= count {
            return Err(format!(
                "replica index {index} is not below the count {count}"
            ));
        }
        Ok(Shard { index, count })
    }

    /// Whether this replica polls `object`: rendezvous hashing, so a
    /// change of replica count moves only about 1/n of the objects.
    pub fn owns(&self, object: &str) -> bool {
        use sha2::{Digest, Sha256};
        let score = |i: u32| -> [u8; 32] { Sha256::digest(format!("{object}\0{i}")).into() };
        (0..self.count).max_by_key(|i| score(*i)) == Some(self.index)
    }
}
