//! Subjects of the log's messages. Every message is on `<prefix>.>`; the subject only says
//! what a message holds (the optimistic-concurrency check is on the stream's sequence, so it
//! does not depend on subjects):
//!
//! - one transaction on one stream `user-<id>`: `<prefix>.<org>.user.<id>` (docs/architecture.md);
//! - one transaction on one other stream: `<prefix>.<org>.stream.<name>`;
//! - several streams (or group-committed transactions) of one org: `<prefix>.<org>.tx`;
//! - several orgs: `<prefix>._all.tx`; the genesis message: `<prefix>._log.genesis`.
//!
//! Org and name become single subject tokens: bytes other than ASCII letters, digits, `-`
//! and a non-leading `_` are written `%XX`, an empty value as `%`. So a token never starts
//! with `_` (kept for the log's own subjects) and never holds `.`, `*`, `>` or whitespace.

use crate::StreamId;

/// Appends `value` as one subject token.
pub(crate) fn push_token(out: &mut String, value: &str) {
    if value.is_empty() {
        out.push('%');
        return;
    }
    for (i, b) in value.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'-' || (b == b'_' && i > 0);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// The subject of a message holding appends to `streams` (in order, at least one).
pub(crate) fn for_streams<'a>(
    prefix: &str,
    single_transaction: bool,
    mut streams: impl Iterator<Item = &'a StreamId>,
) -> String {
    let mut subject = String::with_capacity(prefix.len() + 48);
    subject.push_str(prefix);
    subject.push('.');
    let Some(first) = streams.next() else {
        subject.push_str("_all.tx");
        return subject;
    };
    let mut one_stream = true;
    for s in streams {
        one_stream = false;
        if s.org != first.org {
            subject.push_str("_all.tx");
            return subject;
        }
    }
    push_token(&mut subject, &first.org);
    if !(single_transaction && one_stream) {
        subject.push_str(".tx");
    } else if let Some(id) = first.name.strip_prefix("user-").filter(|id| !id.is_empty()) {
        subject.push_str(".user.");
        push_token(&mut subject, id);
    } else {
        subject.push_str(".stream.");
        push_token(&mut subject, &first.name);
    }
    subject
}

/// The subject of the genesis message.
pub(crate) fn genesis(prefix: &str) -> String {
    format!("{prefix}._log.genesis")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(org: &str, name: &str) -> StreamId {
        StreamId::new(org, name)
    }

    #[test]
    fn subjects_say_what_a_message_holds() {
        let user = s("acme", "user-01JD");
        assert_eq!(
            for_streams("roster", true, [&user].into_iter()),
            "roster.acme.user.01JD"
        );
        assert_eq!(
            for_streams("roster", true, [&s("acme", "settings")].into_iter()),
            "roster.acme.stream.settings"
        );
        assert_eq!(
            for_streams("roster", false, [&user].into_iter()),
            "roster.acme.tx"
        );
        assert_eq!(
            for_streams("roster", true, [&user, &s("acme", "b")].into_iter()),
            "roster.acme.tx"
        );
        assert_eq!(
            for_streams("roster", true, [&user, &s("other", "b")].into_iter()),
            "roster._all.tx"
        );
    }

    #[test]
    fn tokens_are_escaped_and_distinct() {
        let token = |v: &str| {
            let mut out = String::new();
            push_token(&mut out, v);
            out
        };
        assert_eq!(token("a.b c*>"), "a%2Eb%20c%2A%3E");
        assert_eq!(token("_x_y"), "%5Fx_y");
        assert_eq!(token(""), "%");
        assert_eq!(token("%"), "%25");
        assert_ne!(token("a-b"), token("a_b"));
        assert_eq!(token("é"), "%C3%A9");
    }
}
