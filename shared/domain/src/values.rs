//! Validated values, parsed once at the edge (docs/contract.md §2). Deeper code never re-validates.

use serde_json::{Map, Value};
use unicode_normalization::UnicodeNormalization;

use crate::error::FieldError;

/// Largest serialized `metadata` (bytes).
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Largest serialized `custom` (bytes).
pub const MAX_CUSTOM_BYTES: usize = 16 * 1024;
/// Largest serialized `prefs` (bytes).
pub const MAX_PREFS_BYTES: usize = 64 * 1024;
/// Longest `name` (characters).
pub const MAX_NAME_CHARS: usize = 128;
/// Longest `username` (characters).
pub const MAX_USERNAME_CHARS: usize = 128;
/// Longest email address (characters).
pub const MAX_EMAIL_CHARS: usize = 254;
/// Password length bounds (characters); never truncated.
pub const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 8..=256;

/// Organization ids and user ids share one grammar: 1–36 of `a-z A-Z 0-9 . - _`, not starting
/// with `.`, `-` or `_`.
fn check_id(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 36 {
        return Err("must be 1 to 36 characters".into());
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err("may contain only a-z, A-Z, 0-9, '.', '-' and '_'".into());
    }
    if s.starts_with(['.', '-', '_']) {
        return Err("may not start with '.', '-' or '_'".into());
    }
    Ok(())
}

/// A user id (docs/contract.md §2). `"unique()"` or no id at all means "generate one"
/// ([`UserId::generate`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    /// Parses a client-supplied id; `"unique()"` generates a ULID.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "unique()" {
            return Ok(Self::generate());
        }
        check_id(s)?;
        Ok(Self(s.to_owned()))
    }

    /// A fresh ULID id.
    pub fn generate() -> Self {
        Self(ulid::Ulid::new().to_string())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id's event stream name.
    pub fn stream_name(&self) -> String {
        format!("user-{}", self.0)
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An organization id (tenancy); `default` when the request names none.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrgId(String);

impl OrgId {
    /// Parses an organization id (same grammar as user ids).
    pub fn parse(s: &str) -> Result<Self, String> {
        check_id(s)?;
        Ok(Self(s.to_owned()))
    }

    /// The default organization.
    pub fn default_org() -> Self {
        Self("default".into())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for OrgId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `c` is an invisible format character (Unicode general category Cf): bidi controls
/// (U+202A–202E, U+2066–2069, U+200E/200F), zero-width characters (U+200B–200D, U+2060,
/// U+FEFF), soft hyphens and the like. They make names look like other names (`ad\u{202E}nim`
/// reads as another word), so names people are shown refuse them.
pub fn is_format_char(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x0890..=0x0891 | 0x08E2
        | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F
        | 0xFEFF | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F
        | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F)
}

/// Text fields shown to people as a name: besides control characters, they refuse
/// [invisible format characters](is_format_char).
const SHOWN_AS_NAMES: &[&str] = &["display_name"];

/// A username: 1–128 characters, no whitespace, control or invisible format characters, at
/// least one letter or digit (so its normalized form is never empty).
///
/// Format characters are refused, not normalized away: the normalized form (and so the
/// reservation of every username taken before this rule) is unchanged — it already dropped
/// them with every other character that is not a letter or digit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// Parses a username.
    pub fn parse(s: &str) -> Result<Self, String> {
        let chars = s.chars().count();
        if chars == 0 || chars > MAX_USERNAME_CHARS {
            return Err(format!("must be 1 to {MAX_USERNAME_CHARS} characters"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("may not contain whitespace or control characters".into());
        }
        if s.chars().any(is_format_char) {
            return Err(
                "may not contain invisible format characters (bidi controls, zero-width \
                 characters)"
                    .into(),
            );
        }
        if normalize_username(s).is_empty() {
            return Err("must contain at least one letter or digit".into());
        }
        Ok(Self(s.to_owned()))
    }

    /// The username as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form compared for uniqueness (see [`normalize_username`]).
    pub fn normalized(&self) -> String {
        normalize_username(&self.0)
    }
}

/// Unicode NFKC, lowercase, and every character that is not a letter or digit removed:
/// `John Doe`, `john.doe` and `JOHN_DOE` all become `johndoe`.
pub fn normalize_username(s: &str) -> String {
    s.nfkc()
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_alphanumeric())
        .collect()
}

/// An email address: at most 254 characters, `local@domain` with a dotted domain that is a
/// valid internationalized domain name (IDNA, UTS 46), in Unicode or ASCII (`xn--`) form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Parses an email address (surrounding whitespace is an error, not trimmed silently).
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.chars().count() > MAX_EMAIL_CHARS {
            return Err(format!("must be at most {MAX_EMAIL_CHARS} characters"));
        }
        let invalid = || "must be a valid email address".to_string();
        let (local, domain) = s.rsplit_once('@').ok_or_else(invalid)?;
        if local.is_empty()
            || local.len() > 64
            || local.chars().any(|c| {
                c.is_whitespace()
                    || c.is_control()
                    || matches!(
                        c,
                        '@' | '<' | '>' | ',' | ';' | '(' | ')' | '[' | ']' | '"' | '\\'
                    )
            })
        {
            return Err(invalid());
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2
            || labels.iter().any(|l| {
                l.is_empty()
                    || l.len() > 63
                    || l.starts_with('-')
                    || l.ends_with('-')
                    || !l.chars().all(|c| c.is_alphanumeric() || c == '-')
            })
        {
            return Err(invalid());
        }
        if idna::domain_to_ascii_strict(domain).is_err() {
            return Err(
                "must be a valid email address (its domain is not a valid domain name)".into(),
            );
        }
        Ok(Self(s.to_owned()))
    }

    /// The address as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form compared for uniqueness (see [`normalize_email`]).
    pub fn normalized(&self) -> String {
        normalize_email(&self.0)
    }
}

/// Emails compare case-insensitively (docs/contract.md §2), and their domains after IDNA
/// processing: the local part NFKC-normalized and lowercased, the domain in its Unicode form
/// (UTS 46 ToUnicode, which lowercases too), so `Case@EXÄMPLE.com`, `case@exämple.com` and
/// `case@xn--exmple-cua.com` are one address. A domain that is not a valid IDNA name keeps
/// the earlier normalization ([`legacy_normalize_email`]).
///
/// The Unicode form is the one releases before IDNA comparison produced for addresses typed
/// in Unicode, so their reservations keep their keys; the ASCII spelling is covered by
/// [`legacy_email_forms`].
pub fn normalize_email(s: &str) -> String {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return legacy_normalize_email(s);
    };
    match idna::domain_to_unicode(domain) {
        (unicode, Ok(())) => {
            let local: String = local.nfkc().flat_map(char::to_lowercase).collect();
            format!("{local}@{unicode}")
        }
        (_, Err(_)) => legacy_normalize_email(s),
    }
}

/// How releases before IDNA comparison normalized an email: the whole address NFKC and
/// lowercased.
pub fn legacy_normalize_email(s: &str) -> String {
    s.nfkc().flat_map(char::to_lowercase).collect()
}

/// The other normalized forms under which releases before IDNA comparison may have reserved
/// this address (besides [`normalize_email`]'s): the address in its ASCII (punycode)
/// spelling, and as given. A store written then holds a reservation of whichever spelling
/// the user typed; claiming these too keeps every address taken then taken, however it is
/// spelled now.
pub fn legacy_email_forms(s: &str) -> Vec<String> {
    let primary = normalize_email(s);
    let mut forms = Vec::new();
    if let Some((local, domain)) = s.rsplit_once('@')
        && let Ok(ascii) = idna::domain_to_ascii(domain)
    {
        forms.push(legacy_normalize_email(&format!("{local}@{ascii}")));
    }
    forms.push(legacy_normalize_email(s));
    forms.retain(|f| *f != primary);
    forms.sort();
    forms.dedup();
    forms
}

/// A phone number in E.164: `+` and 1 to 15 digits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phone(String);

impl Phone {
    /// Parses an E.164 phone number.
    pub fn parse(s: &str) -> Result<Self, String> {
        let digits = s.strip_prefix('+').unwrap_or("");
        if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err("must be E.164: '+' followed by 1 to 15 digits".into());
        }
        Ok(Self(s.to_owned()))
    }

    /// The number as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password that meets the policy (8–256 characters, never truncated). It exists only
/// until it is hashed; nothing in the domain stores it.
pub struct Password(String);

impl Password {
    /// Checks the policy.
    pub fn parse(s: &str) -> Result<Self, String> {
        let n = s.chars().count();
        if !PASSWORD_CHARS.contains(&n) {
            return Err(format!(
                "must be {} to {} characters",
                PASSWORD_CHARS.start(),
                PASSWORD_CHARS.end()
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The plain text, for the hasher only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// A length-checked free-text field (`name`, `display_name`, …). Names shown to people
/// (`display_name`) also refuse invisible format characters.
pub fn check_text(field: &str, s: &str, max_chars: usize) -> Result<(), FieldError> {
    if s.chars().count() > max_chars {
        return Err(FieldError::new(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(FieldError::new(field, "may not contain control characters"));
    }
    if SHOWN_AS_NAMES.contains(&field) && s.chars().any(is_format_char) {
        return Err(FieldError::new(
            field,
            "may not contain invisible format characters (bidi controls, zero-width characters)",
        ));
    }
    Ok(())
}

/// A role: 1–64 of `a-z 0-9 _ -` (roles are compared exactly, so no case games).
pub fn check_role(s: &str) -> Result<(), String> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err("must be 1 to 64 of a-z, 0-9, '_' and '-'".into());
    }
    Ok(())
}

/// A JSON object's serialized size must stay within `max` bytes.
pub fn check_json_size(
    field: &str,
    value: &Map<String, Value>,
    max: usize,
) -> Result<(), FieldError> {
    let size = serde_json::to_vec(value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > max {
        return Err(FieldError::new(
            field,
            format!("is {size} bytes serialized; the limit is {max}"),
        ));
    }
    Ok(())
}

/// Field names inside `custom` may not contain `.` or spaces, at any depth (dotted paths
/// address them).
pub fn check_custom_keys(field: &str, value: &Value) -> Result<(), FieldError> {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k.is_empty() || k.contains('.') || k.chars().any(char::is_whitespace) {
                    return Err(FieldError::new(
                        format!("{field}.{k}"),
                        "field names in custom may not be empty or contain '.' or spaces",
                    ));
                }
                check_custom_keys(&format!("{field}.{k}"), v)?;
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|v| check_custom_keys(field, v)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids() {
        for ok in ["a", "A9", "x.y-z_w", &"a".repeat(36)] {
            assert!(UserId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".a", "-a", "_a", "a b", "a/b", "é", &"a".repeat(37)] {
            assert!(UserId::parse(bad).is_err(), "{bad}");
        }
        let generated = UserId::parse("unique()").unwrap();
        assert_eq!(generated.as_str().len(), 26);
    }

    #[test]
    fn usernames_normalize_to_collide() {
        let forms = ["John Doe", "john.doe", "JOHN_DOE", "Ｊｏｈｎ－Ｄｏｅ"];
        for f in forms {
            assert_eq!(normalize_username(f), "johndoe", "{f}");
        }
        assert!(Username::parse("john doe").is_err(), "whitespace");
        assert!(Username::parse("a\u{7}").is_err(), "control");
        assert!(Username::parse("...").is_err(), "no letter or digit");
        assert!(Username::parse(&"x".repeat(128)).is_ok());
        assert!(Username::parse(&"x".repeat(129)).is_err());
        assert!(Username::parse("").is_err());
    }

    #[test]
    fn emails() {
        for ok in [
            "a@b.co",
            "Alice.Liddell+tag@Example.COM",
            "x@sub.domain-1.org",
        ] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "a", "a@b", "@b.co", "a@.co", "a@b..co", "a b@c.co", " a@b.co", "a@-b.co",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        let long = format!("{}@{}.com", "a".repeat(64), "b".repeat(63));
        assert!(Email::parse(&long).is_ok());
        let too_long = format!(
            "{}@{}.{}.{}.com",
            "a".repeat(64),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(60)
        );
        assert!(Email::parse(&too_long).is_err());
        assert_eq!(Email::parse("A@B.CO").unwrap().normalized(), "a@b.co");
    }

    #[test]
    fn names_refuse_invisible_format_characters() {
        for spoof in [
            "ad\u{202E}nim",
            "a\u{2066}b\u{2069}",
            "pla\u{200B}in",
            "x\u{FEFF}",
            "a\u{00AD}b",
        ] {
            assert!(Username::parse(spoof).is_err(), "{spoof:?}");
            assert!(check_text("display_name", spoof, 128).is_err(), "{spoof:?}");
        }
        // The normalized form (the reservation key) is what it was: they were dropped there.
        assert_eq!(normalize_username("ad\u{202E}min"), "admin");
        // Legal names are not names shown as handles: a ZWNJ is part of some scripts' spelling.
        assert!(check_text("name", "می\u{200C}خواهم", 128).is_ok());
        assert!(Username::parse("Zoë").is_ok());
    }

    #[test]
    fn email_domains_compare_after_idna() {
        let forms = [
            "case@exämple.com",
            "Case@EXÄMPLE.com",
            "case@xn--exmple-cua.com",
            "CASE@XN--EXMPLE-CUA.COM",
        ];
        for f in forms {
            assert!(Email::parse(f).is_ok(), "{f}");
            assert_eq!(normalize_email(f), "case@exämple.com", "{f}");
        }
        // What the releases before wrote for a Unicode address is the same key.
        assert_eq!(
            legacy_normalize_email("case@exämple.com"),
            normalize_email("case@exämple.com")
        );
        // The ASCII spelling is the other form an old store may hold.
        assert_eq!(
            legacy_email_forms("case@exämple.com"),
            ["case@xn--exmple-cua.com"]
        );
        assert_eq!(
            legacy_email_forms("Case@XN--exmple-cua.com"),
            ["case@xn--exmple-cua.com"]
        );
        assert!(legacy_email_forms("a@example.com").is_empty());
        for bad in ["a@xn--zz.com", "a@exa\u{202E}mple.com", "a@-x.com"] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn passwords_and_phones() {
        assert!(Password::parse("1234567").is_err());
        assert!(Password::parse("12345678").is_ok());
        assert!(Password::parse(&"p".repeat(256)).is_ok());
        assert!(Password::parse(&"p".repeat(257)).is_err());
        assert_eq!(
            format!("{:?}", Password::parse("secret-pw").unwrap()),
            "Password(..)"
        );
        assert!(Phone::parse("+14155550100").is_ok());
        for bad in ["14155550100", "+", "+1234567890123456", "+1 415"] {
            assert!(Phone::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn custom_keys() {
        let ok = serde_json::json!({"a": {"b": [{"c": 1}]}});
        assert!(check_custom_keys("custom", &ok).is_ok());
        let dotted = serde_json::json!({"a": {"b.c": 1}});
        assert_eq!(
            check_custom_keys("custom", &dotted).unwrap_err().field,
            "custom.a.b.c"
        );
        let spaced = serde_json::json!({"a b": 1});
        assert!(check_custom_keys("custom", &spaced).is_err());
    }
}

/// Ids in stored values: strings, checked by the id grammar (so a stored `unique()` is an
/// error, never a fresh id).
macro_rules! id_serde {
    ($ty:ident) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                check_id(&s).map_err(serde::de::Error::custom)?;
                Ok(Self(s))
            }
        }
        impl schemars::JsonSchema for $ty {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($ty).into()
            }
            fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
                String::json_schema(generator)
            }
        }
    };
}
id_serde!(UserId);
id_serde!(OrgId);
