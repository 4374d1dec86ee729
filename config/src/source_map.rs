//! Positions of YAML nodes by field path, so validation errors can point at a line and column.
//!
//! serde does not keep positions, so the file is parsed a second time with an event parser that
//! records where each node (and each mapping key) starts, keyed by the same field paths the
//! validator uses (`routes[0].match.host`).

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl Position {
    /// The start of the document.
    pub const START: Position = Position { line: 1, column: 1 };
}

/// Field path → position of the value node and, for mapping entries, of the key.
#[derive(Debug, Default)]
pub struct SourceMap {
    values: HashMap<String, Position>,
    keys: HashMap<String, Position>,
}

impl SourceMap {
    /// Indexes a YAML document. Parse errors leave a partial map; serde reports them.
    pub fn build(text: &str) -> Self {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        let _ = parser.load(&mut builder, false);
        builder.map
    }

    /// Position of the value at `path`, or of its closest indexed ancestor.
    pub fn value(&self, path: &str) -> Position {
        self.lookup(&self.values, path)
    }

    /// Position of the key of the mapping entry at `path` (falls back to the value).
    pub fn key(&self, path: &str) -> Position {
        match self.keys.get(path) {
            Some(pos) => *pos,
            None => self.value(path),
        }
    }

    fn lookup(&self, table: &HashMap<String, Position>, path: &str) -> Position {
        let mut current = path;
        loop {
            if let Some(pos) = table.get(current) {
                return *pos;
            }
            match parent(current) {
                Some(p) => current = p,
                None => return Position::START,
            }
        }
    }
}

/// The parent of a field path: `a.b[2]` → `a.b` → `a` → ``.
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

fn to_position(mark: Marker) -> Position {
    // yaml-rust2 markers: line is 1-based, column 0-based.
    Position {
        line: mark.line().max(1),
        column: mark.col() + 1,
    }
}

enum Frame {
    Map {
        path: String,
        pending_key: Option<(String, Position)>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    map: SourceMap,
}

impl Builder {
    /// Where the node that starts now lives, or `None` when it is a mapping key.
    fn node_path(&mut self, key_text: Option<&str>, pos: Position) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                Some(p)
            }
            Some(Frame::Map { path, pending_key }) => match pending_key.take() {
                Some((key, key_pos)) => {
                    let p = if path.is_empty() {
                        key
                    } else {
                        format!("{path}.{key}")
                    };
                    self.map.keys.insert(p.clone(), key_pos);
                    Some(p)
                }
                None => {
                    *pending_key = Some((key_text.unwrap_or("?").to_string(), pos));
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = to_position(mark);
        match ev {
            Event::Scalar(text, ..) => {
                if let Some(path) = self.node_path(Some(&text), pos) {
                    self.map.values.entry(path).or_insert(pos);
                }
            }
            Event::Alias(_) => {
                if let Some(path) = self.node_path(Some("<alias>"), pos) {
                    self.map.values.entry(path).or_insert(pos);
                }
            }
            Event::MappingStart(..) => {
                // A complex (mapping) key is not valid config anyway; index it under "?".
                let path = self.node_path(Some("?"), pos).unwrap_or_else(|| "?".into());
                self.map.values.entry(path.clone()).or_insert(pos);
                self.stack.push(Frame::Map {
                    path,
                    pending_key: None,
                });
            }
            Event::SequenceStart(..) => {
                let path = self.node_path(Some("?"), pos).unwrap_or_else(|| "?".into());
                self.map.values.entry(path.clone()).or_insert(pos);
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_nested_paths_with_one_based_positions() {
        let text = "routes:\n  - name: api\n    regions: [fra, ber]\n";
        let map = SourceMap::build(text);
        assert_eq!(
            map.value("routes[0].name"),
            Position {
                line: 2,
                column: 11
            }
        );
        assert_eq!(map.key("routes[0].name"), Position { line: 2, column: 5 });
        assert_eq!(
            map.value("routes[0].regions[1]"),
            Position {
                line: 3,
                column: 20
            }
        );
        // Unknown paths fall back to the closest ancestor.
        assert_eq!(
            map.value("routes[0].regions[1].x"),
            Position {
                line: 3,
                column: 20
            }
        );
        assert_eq!(map.value("nope").line, 1);
    }
}
