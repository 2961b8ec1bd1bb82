//! Where each read model lives in the one sled tree: a table byte, then the row's key.
//! One tree, so a batch of events and the checkpoint past it are one atomic `apply_batch`.
//! (The username and email indexes are in memory, in the catalog: rebuilt from the rows'
//! public parts at start-up, they cost a user's creation no write of their own.)
//!
//! | table | key after the table byte | value |
//! |---|---|---|
//! | `u` users | org NUL id | the user row (sealed) |
//! | `l` wallet ledger | org NUL id NUL position (u64 BE) | the ledger item (sealed) |
//! | `s` sessions | org NUL user id NUL session id | the session row (sealed) |
//! | `t` tasks | org NUL task id | the task |
//! | `f` task failures | org NUL task id NUL index (u64 BE) | the failure |
//! | `c` settings | org | the organization's settings |
//! | `w` webhooks | org NUL webhook id | the webhook (no secret) |
//! | `g` teams | org NUL team id | the team |
//! | `b` memberships | org NUL team id NUL membership id | the membership |
//! | `k` token keys | expiry (i64 BE) key id | nothing |
//! | `m` meta | `checkpoint`, `format` | position (u64 BE), read-model format |

/// A read model's table byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Table {
    /// Users by id.
    Users = b'u',
    /// Wallet ledger items.
    Ledger = b'l',
    /// Client sessions.
    Sessions = b's',
    /// Bulk tasks.
    Tasks = b't',
    /// Failures of bulk tasks.
    TaskFailures = b'f',
    /// Organization settings.
    Settings = b'c',
    /// Data keys of issued purpose tokens, by expiry (destroyed once expired).
    TokenKeys = b'k',
    /// Webhooks (without their secrets).
    Webhooks = b'w',
    /// Teams.
    Teams = b'g',
    /// Team memberships, by team.
    Memberships = b'b',
    /// Checkpoint and format.
    Meta = b'm',
}

impl Table {
    /// Every table holding read-model data (all but [`Table::Meta`]).
    pub const DATA: [Table; 10] = [
        Table::Users,
        Table::Ledger,
        Table::Sessions,
        Table::Tasks,
        Table::TaskFailures,
        Table::Settings,
        Table::TokenKeys,
        Table::Webhooks,
        Table::Teams,
        Table::Memberships,
    ];

    /// A key of this table built from NUL-separated parts.
    pub fn key(self, parts: &[&[u8]]) -> Vec<u8> {
        let len = 1 + parts.iter().map(|p| p.len() + 1).sum::<usize>();
        let mut key = Vec::with_capacity(len);
        key.push(self as u8);
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                key.push(0);
            }
            key.extend_from_slice(part);
        }
        key
    }

    /// The prefix of every key of this table whose parts start with `parts` (each followed by
    /// its NUL).
    pub fn prefix(self, parts: &[&[u8]]) -> Vec<u8> {
        let mut key = self.key(parts);
        key.push(0);
        key
    }

    /// The table's name (for diagnostics).
    pub fn name(self) -> &'static str {
        match self {
            Table::Users => "users",
            Table::Ledger => "wallet_ledger",
            Table::Sessions => "sessions",
            Table::Tasks => "tasks",
            Table::TaskFailures => "task_failures",
            Table::Settings => "settings",
            Table::TokenKeys => "token_keys",
            Table::Webhooks => "webhooks",
            Table::Teams => "teams",
            Table::Memberships => "memberships",
            Table::Meta => "meta",
        }
    }
}

/// Key of a user row.
pub fn user_key(org: &str, id: &str) -> Vec<u8> {
    Table::Users.key(&[org.as_bytes(), id.as_bytes()])
}

/// Key of a webhook row.
pub fn webhook_key(org: &str, id: &str) -> Vec<u8> {
    Table::Webhooks.key(&[org.as_bytes(), id.as_bytes()])
}

/// Key of a team row.
pub fn team_key(org: &str, id: &str) -> Vec<u8> {
    Table::Teams.key(&[org.as_bytes(), id.as_bytes()])
}

/// Key of a membership row.
pub fn membership_key(org: &str, team: &str, id: &str) -> Vec<u8> {
    Table::Memberships.key(&[org.as_bytes(), team.as_bytes(), id.as_bytes()])
}

/// Key of a ledger item.
pub fn ledger_key(org: &str, id: &str, position: u64) -> Vec<u8> {
    Table::Ledger.key(&[org.as_bytes(), id.as_bytes(), &position.to_be_bytes()])
}

/// Key of a session row.
pub fn session_key(org: &str, user_id: &str, session_id: &str) -> Vec<u8> {
    Table::Sessions.key(&[org.as_bytes(), user_id.as_bytes(), session_id.as_bytes()])
}

/// Key of a task row.
pub fn task_key(org: &str, id: &str) -> Vec<u8> {
    Table::Tasks.key(&[org.as_bytes(), id.as_bytes()])
}

/// Key of a task's failure.
pub fn failure_key(org: &str, id: &str, index: u64) -> Vec<u8> {
    Table::TaskFailures.key(&[org.as_bytes(), id.as_bytes(), &index.to_be_bytes()])
}

/// Key of an organization's settings.
pub fn settings_key(org: &str) -> Vec<u8> {
    Table::Settings.key(&[org.as_bytes()])
}

/// The token-keys entry of a purpose token's data key expiring at `expires_at` (micros): the
/// expiry big-endian first, so a scan up to now finds the expired ones.
pub fn token_key(expires_at: i64, key_id: roster_domain::KeyId) -> Vec<u8> {
    let mut key = Vec::with_capacity(25);
    key.push(Table::TokenKeys as u8);
    key.extend_from_slice(&(expires_at.max(0) as u64).to_be_bytes());
    key.extend_from_slice(&key_id.to_bytes());
    key
}

/// The part of `key` after `prefix`, as text.
pub fn suffix(key: &[u8], prefix: &[u8]) -> String {
    String::from_utf8_lossy(&key[prefix.len().min(key.len())..]).into_owned()
}

/// The organization of a key (its first part).
pub fn org_of(key: &[u8]) -> String {
    let rest = key.get(1..).unwrap_or_default();
    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).into_owned()
}

/// The key just past every key starting with `prefix` (which ends with a NUL separator, as
/// [`Table::prefix`] makes it).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    match end.last_mut() {
        Some(last) if *last < u8::MAX => *last += 1,
        _ => end.push(u8::MAX),
    }
    end
}
