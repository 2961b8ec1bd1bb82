//! The user rows of the `users` table: the user as the events made it, its public part in
//! clear and its personal part sealed under its data key (by [`crate::codec::seal_parts`],
//! like every stored value).

use roster_domain::KeyId;
use roster_domain::user::{User, UserPersonal, UserPublic};
use roster_eventlog::Position;
use roster_vault::DataKey;
use serde::{Deserialize, Serialize};

use crate::codec::{Codec, CodecError, Layout, open_parts, seal_parts};
use crate::layout::user_key;

/// One user in the `users` table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Position of the event that created this incarnation of the user: the list order.
    pub seq: Position,
    /// The user.
    pub user: User,
    /// Blind hashes under which the user is in the username and email indexes. Kept in the
    /// clear (keyed hashes, not personal values) so the entries can still be removed after the
    /// user's key is destroyed and its username and email no longer read back.
    pub indexed: Indexed,
}

/// The index entries of a row.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Indexed {
    /// Blind hash of the normalized username.
    pub username: Option<String>,
    /// Blind hash of the normalized email.
    pub email: Option<String>,
}

fn aad(org: &str, id: &str) -> Vec<u8> {
    let mut aad = b"row2/".to_vec();
    aad.extend_from_slice(&user_key(org, id));
    aad
}

impl Row {
    /// The data key the row is sealed under.
    pub fn key_id(&self) -> Option<KeyId> {
        self.user.public.key_id
    }

    /// The stored bytes, the personal part sealed under `key` (the user's; without it the
    /// personal part is dropped: a user whose key is gone holds nothing personal).
    pub fn seal(&self, key: Option<&DataKey>) -> Vec<u8> {
        let public = &self.user.public;
        let personal = &self.user.personal;
        seal_parts(
            &(self.seq, public, &self.indexed),
            personal,
            *personal == UserPersonal::default(),
            public.key_id.zip(key),
            &aad(public.organization_id.as_str(), public.id.as_str()),
            Layout::Positional,
        )
    }

    /// Reads a stored row back, opening its personal part if the key still exists.
    pub async fn open(bytes: &[u8], codec: &Codec) -> Result<Row, CodecError> {
        // The associated data names the row, as its public part does.
        let named = |(_, public, _): &(Position, UserPublic, Indexed)| {
            aad(public.organization_id.as_str(), public.id.as_str())
        };
        let ((seq, public, indexed), personal, _erased) =
            open_parts::<_, UserPersonal, _>(codec, bytes, named, "user row").await?;
        Ok(Row {
            seq,
            user: User { public, personal },
            indexed,
        })
    }
}
