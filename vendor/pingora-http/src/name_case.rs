// PATCH (failover gateway): the spelling of header names on the HTTP/1 wire, kept without a
// second hashed map in the common case.
//
// Pingora kept the case of every header name in a second `HeaderMap<CaseHeaderName>` in step
// with the value map, so each header read, added, cloned or removed was hashed and stored
// twice. Nearly every peer spells all its names one way: lowercase (hyper, Envoy, h2 peers) or
// title case (curl, browsers, nginx, Go). So a header keeps a style and, for the few names
// spelled otherwise (one spelling per name: a proxy's added fields, nginx's `ETag`), a short
// list; only a name spelled two ways within one header (`Set-Cookie` and `set-cookie`) turns
// it into the exact per-value map, as before. The bytes written are the same as with the map.

use crate::case_header_name::CaseHeaderName;
use crate::HMap;
use bytes::{BufMut, Bytes};
use http::header::{AsHeaderName, HeaderName, HeaderValue};
use pingora_error::{ErrorType::*, OrErr, Result};

/// The exact per-value spelling map, in step with the value map.
pub(crate) type CaseMap = HMap<CaseHeaderName>;

/// How every name is spelled unless it is listed as odd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// As the name itself: `content-length`.
    Lower,
    /// The first letter and each after a `-` upper case: `Content-Length`.
    Title,
}

impl Style {
    /// The style `case` spells `name` in, if any (lowercase first where both apply).
    fn of(name: &HeaderName, case: &[u8]) -> Option<Self> {
        [Style::Lower, Style::Title]
            .into_iter()
            .find(|style| style.spells(name, case))
    }

    /// Whether `case` is `name` in this style.
    fn spells(self, name: &HeaderName, case: &[u8]) -> bool {
        let lower = name.as_str().as_bytes();
        match self {
            Style::Lower => case == lower,
            Style::Title => {
                if let Some(titled) = titled_standard(name) {
                    return case == titled;
                }
                if case.len() != lower.len() {
                    return false;
                }
                let mut up = true;
                for (&l, &c) in lower.iter().zip(case) {
                    if c != if up { l.to_ascii_uppercase() } else { l } {
                        return false;
                    }
                    up = l == b'-';
                }
                true
            }
        }
    }

    /// `name` spelled in this style.
    fn render(self, name: &HeaderName) -> Bytes {
        let lower = name.as_str().as_bytes();
        match self {
            Style::Lower => Bytes::copy_from_slice(lower),
            Style::Title => match titled_standard(name) {
                Some(titled) => Bytes::from_static(titled),
                None => Bytes::from(title(lower)),
            },
        }
    }

    /// Writes `name` in this style.
    fn put(self, name: &HeaderName, buf: &mut impl BufMut) {
        let lower = name.as_str().as_bytes();
        match self {
            Style::Lower => buf.put_slice(lower),
            Style::Title => {
                if let Some(titled) = titled_standard(name) {
                    buf.put_slice(titled);
                    return;
                }
                let mut stack = [0u8; 64];
                if lower.len() <= stack.len() {
                    for (i, &l) in lower.iter().enumerate() {
                        stack[i] = title_byte(lower, i, l);
                    }
                    buf.put_slice(&stack[..lower.len()]);
                } else {
                    buf.put_slice(&title(lower));
                }
            }
        }
    }
}

/// The title-case spelling of a standard name (`Content-Length`), made once per name on first
/// use: checking and writing a title-case head's standard names compares and copies it instead
/// of going through the name a byte at a time. `None` for other names.
fn titled_standard(name: &HeaderName) -> Option<&'static [u8]> {
    static TITLED: [std::sync::OnceLock<Box<[u8]>>; 128] =
        [const { std::sync::OnceLock::new() }; 128];
    let slot = TITLED.get(name.standard_index()?)?;
    Some(slot.get_or_init(|| title(name.as_str().as_bytes()).into_boxed_slice()))
}

fn title_byte(lower: &[u8], i: usize, l: u8) -> u8 {
    if i == 0 || lower[i - 1] == b'-' {
        l.to_ascii_uppercase()
    } else {
        l
    }
}

fn title(lower: &[u8]) -> Vec<u8> {
    lower
        .iter()
        .enumerate()
        .map(|(i, &l)| title_byte(lower, i, l))
        .collect()
}

/// How a value is being added under its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Add {
    /// Beside the name's other values.
    Append,
    /// Replacing the name's other values.
    Insert,
}

/// The spelling of a header's names on the HTTP/1 wire.
#[derive(Debug)]
pub(crate) enum NameCase {
    /// No spelling kept (`build_no_case`): Pingora's titled form of a few standard names,
    /// lowercase for the rest.
    Unkept,
    /// Every name in `style`, except the `odd` ones, each spelled one way for all its values.
    Styled {
        style: Style,
        odd: Vec<(HeaderName, Bytes)>,
    },
    /// A name spelled more than one way: every value's spelling, in step with the value map.
    // PATCH (failover gateway, patch 43): boxed (rare): the spelling field 104 -> 40 bytes, a
    // request head 368 -> 304 (mimalloc's 320 class instead of 384).
    Exact(Box<CaseMap>),
}

impl Clone for NameCase {
    fn clone(&self) -> Self {
        match self {
            NameCase::Unkept => NameCase::Unkept,
            NameCase::Styled { style, odd } => {
                // A clone is usually a head about to be forwarded, to which a proxy adds a few
                // names spelled its own way (`x-forwarded-for`, `x-request-id`, ...): room for
                // them now, not two reallocations later.
                let room = if odd.is_empty() && *style == Style::Lower {
                    0
                } else {
                    odd.len() + 6
                };
                let mut copy = Vec::with_capacity(room);
                copy.extend(odd.iter().cloned());
                NameCase::Styled {
                    style: *style,
                    odd: copy,
                }
            }
            NameCase::Exact(map) => NameCase::Exact(map.clone()),
        }
    }
}

impl NameCase {
    /// A header whose names' spelling is kept (its style set by its first name).
    pub(crate) fn kept() -> Self {
        NameCase::Styled {
            style: Style::Lower,
            odd: Vec::new(),
        }
    }

    pub(crate) fn is_kept(&self) -> bool {
        !matches!(self, NameCase::Unkept)
    }

    /// Records that a value of `name`, spelled `case`, is about to be added to `values`
    /// (`values` as it is before the addition).
    pub(crate) fn add<T>(
        &mut self,
        values: &HMap<T>,
        name: &HeaderName,
        case: CaseHeaderName,
        how: Add,
    ) -> Result<()> {
        let NameCase::Styled { style, odd } = self else {
            return match self {
                NameCase::Exact(map) => exact_add(map, name, case, how),
                _ => Ok(()),
            };
        };
        let spelling = case.as_slice();
        // Checked once: a name out of style (a proxy's added field) was checked twice.
        let in_style = style.spells(name, spelling);
        if odd.is_empty() {
            if in_style {
                return Ok(());
            }
            // The first name sets the style.
            if values.is_empty() {
                if let Some(first) = Style::of(name, spelling) {
                    *style = first;
                    return Ok(());
                }
            }
        }
        let listed = odd.iter().position(|(n, _)| n == name);
        match (how, listed, in_style) {
            (_, None, true) => return Ok(()),
            (Add::Insert, Some(i), true) => {
                odd.swap_remove(i);
                return Ok(());
            }
            (Add::Insert, Some(i), false) => {
                odd[i].1 = case.into_bytes();
                return Ok(());
            }
            (Add::Insert, None, false) => {
                odd.push((name.clone(), case.into_bytes()));
                return Ok(());
            }
            (Add::Append, Some(i), _) if odd[i].1 == spelling => return Ok(()),
            (Add::Append, None, false) if !values.contains_key(name) => {
                odd.push((name.clone(), case.into_bytes()));
                return Ok(());
            }
            // The name's values would be spelled two ways: keep every value's spelling.
            (Add::Append, ..) => {}
        }
        let mut map = CaseMap::with_capacity(values.len() + 1);
        for (n, _) in values.iter() {
            let spelled = self.spelling(n);
            map.try_append(n.clone(), CaseHeaderName::from_bytes(spelled))
                .or_err(InvalidHTTPHeader, "header name map size overflows MAX_SIZE")?;
        }
        exact_add(&mut map, name, case, how)?;
        *self = NameCase::Exact(Box::new(map));
        Ok(())
    }

    /// Records that `name` is about to be set (replacing its values) in `values`, spelled in
    /// the head's style (patch 53): a styled head lists no spelling for it, and an empty one
    /// takes title case, Pingora's spelling of its own names; a head keeping every spelling
    /// keeps the title-case one.
    pub(crate) fn insert_styled<T>(&mut self, values: &HMap<T>, name: &HeaderName) -> Result<()> {
        match self {
            NameCase::Styled { style, odd } => {
                if values.is_empty() && odd.is_empty() {
                    *style = Style::Title;
                } else if let Some(i) = odd.iter().position(|(n, _)| n == name) {
                    odd.swap_remove(i);
                }
                Ok(())
            }
            NameCase::Exact(map) => {
                let titled = CaseHeaderName::from_bytes(Style::Title.render(name));
                exact_add(map, name, titled, Add::Insert)
            }
            NameCase::Unkept => Ok(()),
        }
    }

    /// Records that every value of `name` was removed from `values`.
    pub(crate) fn remove<'a, T, N: ?Sized>(&mut self, values: &HMap<T>, name: &'a N)
    where
        &'a N: 'a + AsHeaderName,
    {
        match self {
            NameCase::Styled { odd, .. } => odd.retain(|(n, _)| values.contains_key(n)),
            NameCase::Exact(map) => {
                map.remove(name);
            }
            NameCase::Unkept => {}
        }
    }

    /// The spelling of `name` in a styled header.
    fn spelling(&self, name: &HeaderName) -> Bytes {
        match self {
            NameCase::Styled { style, odd } => match odd.iter().find(|(n, _)| n == name) {
                Some((_, spelled)) => spelled.clone(),
                None => style.render(name),
            },
            _ => unreachable!("only a styled header spells a name by itself"),
        }
    }

    /// Each value with its name as written on the HTTP/1 wire.
    pub(crate) fn for_each<'a>(
        &'a self,
        values: &'a HMap,
        mut f: impl FnMut(Spelled<'a>, &'a HeaderValue),
    ) {
        match self {
            NameCase::Exact(map) => {
                for ((h1, name), (h2, value)) in map.iter().zip(values.iter()) {
                    // in case the header iteration order changes in future versions of HMap
                    assert_eq!(h1, h2, "header iter mismatch {}, {}", h1, h2);
                    f(Spelled::Exact(name.as_slice()), value);
                }
            }
            NameCase::Styled { style, odd } => {
                for (name, value) in values.iter() {
                    let listed = if odd.is_empty() {
                        None
                    } else {
                        odd.iter().find(|(n, _)| n == name)
                    };
                    match listed {
                        Some((_, spelled)) => f(Spelled::Exact(spelled), value),
                        None => f(Spelled::Styled(*style, name), value),
                    }
                }
            }
            NameCase::Unkept => {
                for (name, value) in values.iter() {
                    let titled = crate::case_header_name::titled_header_name_str(name)
                        .unwrap_or(name.as_str());
                    f(Spelled::Exact(titled.as_bytes()), value);
                }
            }
        }
    }
}

/// A name as written on the wire.
pub(crate) enum Spelled<'a> {
    Exact(&'a [u8]),
    Styled(Style, &'a HeaderName),
}

impl Spelled<'_> {
    pub(crate) fn put(&self, buf: &mut impl BufMut) {
        match self {
            Spelled::Exact(bytes) => buf.put_slice(bytes),
            Spelled::Styled(style, name) => style.put(name, buf),
        }
    }

    pub(crate) fn to_case(&self) -> CaseHeaderName {
        match self {
            Spelled::Exact(bytes) => CaseHeaderName::from_slice(bytes),
            Spelled::Styled(style, name) => CaseHeaderName::from_bytes(style.render(name)),
        }
    }
}

fn exact_add(map: &mut CaseMap, name: &HeaderName, case: CaseHeaderName, how: Add) -> Result<()> {
    match how {
        // Non-panicking `try_*`: the infallible forms `.expect("size overflows MAX_SIZE")`.
        Add::Append => map.try_append(name.clone(), case).map(|_| ()),
        Add::Insert => map.try_insert(name.clone(), case).map(|_| ()),
    }
    .or_err(InvalidHTTPHeader, "header name map size overflows MAX_SIZE")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(case: &NameCase, values: &HMap) -> String {
        let mut buf = Vec::new();
        case.for_each(values, |name, value| {
            name.put(&mut buf);
            buf.extend_from_slice(b": ");
            buf.extend_from_slice(value.as_bytes());
            buf.extend_from_slice(b"\r\n");
        });
        String::from_utf8(buf).unwrap()
    }

    fn add(case: &mut NameCase, values: &mut HMap, spelled: &'static str, how: Add) {
        let name = HeaderName::from_bytes(spelled.as_bytes()).unwrap();
        case.add(
            values,
            &name,
            CaseHeaderName::from_slice(spelled.as_bytes()),
            how,
        )
        .unwrap();
        let value = HeaderValue::from_static("v");
        match how {
            Add::Append => {
                values.append(name, value);
            }
            Add::Insert => {
                values.insert(name, value);
            }
        }
    }

    #[test]
    fn each_style_and_the_odd_names_are_written_as_read() {
        let mut case = NameCase::kept();
        let mut values = HMap::new();
        for name in ["Host", "User-Agent", "x-forwarded-for", "ETag", "Accept"] {
            add(&mut case, &mut values, name, Add::Append);
        }
        assert!(
            matches!(case, NameCase::Styled { style: Style::Title, ref odd } if odd.len() == 2)
        );
        assert_eq!(
            wire(&case, &values),
            "Host: v\r\nUser-Agent: v\r\nx-forwarded-for: v\r\nETag: v\r\nAccept: v\r\n"
        );
    }

    #[test]
    fn a_standard_names_kept_title_spelling_is_the_one_made_a_byte_at_a_time() {
        use http::header;
        for name in [
            header::CONTENT_LENGTH,
            header::WWW_AUTHENTICATE,
            header::ETAG,
            header::X_XSS_PROTECTION,
            header::TE,
            header::DNT,
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
        ] {
            let made = title(name.as_str().as_bytes());
            assert_eq!(titled_standard(&name), Some(made.as_slice()), "{name}");
            assert!(Style::Title.spells(&name, &made), "{name}");
            assert!(
                !Style::Title.spells(&name, name.as_str().as_bytes()),
                "{name}"
            );
            let mut written = Vec::new();
            Style::Title.put(&name, &mut written);
            assert_eq!(written, made, "{name}");
            assert_eq!(Style::Title.render(&name), made, "{name}");
        }
        let custom = HeaderName::from_static("x-forwarded-for");
        assert_eq!(titled_standard(&custom), None);
        let mut written = Vec::new();
        Style::Title.put(&custom, &mut written);
        assert_eq!(written, b"X-Forwarded-For");
    }

    #[test]
    fn a_name_spelled_two_ways_keeps_each_spelling() {
        let mut case = NameCase::kept();
        let mut values = HMap::new();
        for name in ["set-cookie", "content-type", "Set-Cookie"] {
            add(&mut case, &mut values, name, Add::Append);
        }
        assert!(matches!(case, NameCase::Exact(_)));
        assert_eq!(
            wire(&case, &values),
            "set-cookie: v\r\nSet-Cookie: v\r\ncontent-type: v\r\n"
        );
    }

    fn insert_styled(case: &mut NameCase, values: &mut HMap, name: HeaderName) {
        case.insert_styled(values, &name).unwrap();
        values.insert(name, HeaderValue::from_static("v"));
    }

    #[test]
    fn a_styled_insert_is_spelled_as_the_head_spells_its_names() {
        use http::header::{CONNECTION, DATE};
        // A lowercase head (hyper's): Pingora's fields join it in lowercase, the spelling the
        // head had for `date` is replaced along with its value, and nothing is listed.
        let mut case = NameCase::kept();
        let mut values = HMap::new();
        for name in ["content-type", "date"] {
            add(&mut case, &mut values, name, Add::Append);
        }
        insert_styled(&mut case, &mut values, DATE);
        insert_styled(&mut case, &mut values, CONNECTION);
        assert!(matches!(case, NameCase::Styled { style: Style::Lower, ref odd } if odd.is_empty()));
        assert_eq!(
            wire(&case, &values),
            "content-type: v\r\ndate: v\r\nconnection: v\r\n"
        );

        // A title-case head with an odd spelling of the name set: the odd one goes.
        let mut case = NameCase::kept();
        let mut values = HMap::new();
        for name in ["Content-Type", "DATE"] {
            add(&mut case, &mut values, name, Add::Append);
        }
        insert_styled(&mut case, &mut values, DATE);
        assert!(matches!(case, NameCase::Styled { style: Style::Title, ref odd } if odd.is_empty()));
        assert_eq!(wire(&case, &values), "Content-Type: v\r\nDate: v\r\n");

        // An empty head takes title case, as Pingora spelled its own names; a later name
        // spelled otherwise is listed.
        let mut case = NameCase::kept();
        let mut values = HMap::new();
        insert_styled(&mut case, &mut values, DATE);
        add(&mut case, &mut values, "x-id", Add::Append);
        assert_eq!(wire(&case, &values), "Date: v\r\nx-id: v\r\n");

        // A head that keeps every spelling keeps the title-case one.
        let mut case = NameCase::kept();
        let mut values = HMap::new();
        for name in ["set-cookie", "Set-Cookie"] {
            add(&mut case, &mut values, name, Add::Append);
        }
        insert_styled(&mut case, &mut values, CONNECTION);
        assert!(matches!(case, NameCase::Exact(_)));
        assert_eq!(
            wire(&case, &values),
            "set-cookie: v\r\nSet-Cookie: v\r\nConnection: v\r\n"
        );
    }

    #[test]
    fn an_insert_replaces_the_spelling_and_a_removal_forgets_it() {
        let mut case = NameCase::kept();
        let mut values = HMap::new();
        add(&mut case, &mut values, "content-type", Add::Append);
        add(&mut case, &mut values, "Connection", Add::Insert);
        add(&mut case, &mut values, "connection", Add::Insert);
        assert!(matches!(case, NameCase::Styled { ref odd, .. } if odd.is_empty()));
        add(&mut case, &mut values, "X-Id", Add::Insert);
        let name = HeaderName::from_static("x-id");
        values.remove(&name);
        case.remove(&values, &name);
        add(&mut case, &mut values, "x-id", Add::Append);
        assert_eq!(
            wire(&case, &values),
            "content-type: v\r\nconnection: v\r\nx-id: v\r\n"
        );
    }
}
