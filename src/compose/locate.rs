//! Where a service's field is written in the user's compose files, for
//! `file:line` in a refusal: `compose config` prints the merged project
//! without positions, so the original text is parsed again with markers.

use std::path::{Path, PathBuf};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// One step of a path into a document: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

pub fn key(k: &str) -> Step {
    Step::Key(k.to_string())
}

/// A parsed document with the line of every node (1-based).
#[derive(Debug, Clone)]
enum Node {
    Scalar,
    Seq(Vec<(usize, Node)>),
    Map(Vec<(String, usize, Node)>),
}

/// A collection being read: the node, its line, and for a mapping the key
/// (and its line) waiting for its value.
type Open = (Node, usize, Option<(String, usize)>);

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    root: Option<Node>,
}

impl Builder {
    fn push(&mut self, node: Node, line: usize, scalar: Option<String>) {
        let Some((parent, _, pending)) = self.stack.last_mut() else {
            self.root = Some(node);
            return;
        };
        match parent {
            Node::Seq(items) => items.push((line, node)),
            Node::Map(entries) => match pending.take() {
                None => *pending = Some((scalar.unwrap_or_default(), line)),
                Some((k, kline)) => entries.push((k, kline, node)),
            },
            Node::Scalar => {}
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        // yaml-rust2 counts lines from 1 (tested below).
        let line = mark.line();
        match ev {
            Event::Scalar(v, ..) => self.push(Node::Scalar, line, Some(v)),
            Event::Alias(_) => self.push(Node::Scalar, line, None),
            Event::SequenceStart(..) => self.stack.push((Node::Seq(Vec::new()), line, None)),
            Event::MappingStart(..) => self.stack.push((Node::Map(Vec::new()), line, None)),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((node, line, _)) = self.stack.pop() {
                    self.push(node, line, None);
                }
            }
            _ => {}
        }
    }
}

/// A compose file's text, parsed for positions.
#[derive(Debug, Clone)]
pub struct Located {
    pub path: PathBuf,
    root: Option<Node>,
}

impl Located {
    pub fn parse(path: &Path, text: &str) -> Located {
        let mut b = Builder::default();
        // A file compose accepted parses; if not, it just has no positions.
        let _ = Parser::new_from_str(text).load(&mut b, false);
        Located {
            path: path.to_path_buf(),
            root: b.root,
        }
    }

    /// The line of the deepest step of `path` found (with how many steps
    /// matched), or `None` when not even the first one is there.
    pub fn line(&self, path: &[Step]) -> Option<(usize, usize)> {
        let mut node = self.root.as_ref()?;
        let mut found = None;
        for (depth, step) in path.iter().enumerate() {
            let next = match (node, step) {
                (Node::Map(entries), Step::Key(k)) => entries
                    .iter()
                    .find(|(name, _, _)| name == k)
                    .map(|(_, line, n)| (*line, n)),
                (Node::Seq(items), Step::Index(i)) => items.get(*i).map(|(line, n)| (*line, n)),
                _ => None,
            };
            let Some((line, n)) = next else { break };
            found = Some((line, depth + 1));
            node = n;
        }
        found
    }
}

/// `file:line` of `path` in the last file that has the most of it (a later
/// file overrides an earlier one), or `None`.
pub fn find(files: &[Located], path: &[Step]) -> Option<(PathBuf, usize)> {
    let mut best: Option<(PathBuf, usize, usize)> = None;
    for f in files {
        if let Some((line, depth)) = f.line(path) {
            if best.as_ref().is_none_or(|b| depth >= b.2) {
                best = Some((f.path.clone(), line, depth));
            }
        }
    }
    best.map(|(p, l, _)| (p, l))
}

/// Whether any file writes the whole of `path`.
pub fn written(files: &[Located], path: &[Step]) -> bool {
    files
        .iter()
        .any(|f| f.line(path).is_some_and(|(_, d)| d == path.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
services:
  web:
    image: busybox
    volumes:
      - ./a:/a
      - /var/run/docker.sock:/s
    privileged: true
  db: {image: x, cap_add: [SYS_ADMIN]}
";

    #[test]
    fn lines_of_fields_and_items() {
        let f = Located::parse(Path::new("c.yml"), TEXT);
        let at = |p: &[Step]| f.line(p);
        assert_eq!(at(&[key("services"), key("web")]), Some((2, 2)));
        assert_eq!(
            at(&[key("services"), key("web"), key("privileged")]),
            Some((7, 3))
        );
        assert_eq!(
            at(&[key("services"), key("web"), key("volumes"), Step::Index(1)]),
            Some((6, 4))
        );
        assert_eq!(
            at(&[key("services"), key("db"), key("cap_add"), Step::Index(0)]),
            Some((8, 4))
        );
        // Missing steps: the deepest found.
        assert_eq!(at(&[key("services"), key("web"), key("pid")]), Some((2, 2)));
        let other = Located::parse(Path::new("o.yml"), "services:\n  web:\n    pid: host\n");
        let files = [f, other];
        assert_eq!(
            find(&files, &[key("services"), key("web"), key("pid")]),
            Some((PathBuf::from("o.yml"), 3))
        );
        assert!(written(
            &files,
            &[key("services"), key("web"), key("volumes")]
        ));
        assert!(!written(
            &files,
            &[key("services"), key("web"), key("networks")]
        ));
    }
}
