//! The inode table: which number the kernel knows each [`Node`] by.
//!
//! Numbers are handed out from a counter and never reused, so the FUSE generation can stay 0.
//! The kernel counts lookups per number and returns them with `forget`; a number whose count
//! falls to zero is dropped. A node that was removed (topic deleted, a file "unlinked") is
//! *detached*: its number keeps resolving for the kernel until forgotten (open files keep
//! working), but the next lookup of the name gets a fresh number, so the kernel never mixes a
//! dead inode with a live one.
//!
//! Thread-safety: the table lives behind the filesystem's `inodes` mutex, a leaf lock (nothing
//! else is locked while it is held).

use std::collections::HashMap;

use crate::fs::node::Node;

/// The root directory's number, fixed by FUSE.
pub const ROOT_INO: u64 = 1;

#[derive(Debug)]
struct Slot {
    node: Node,
    lookups: u64,
}

#[derive(Debug)]
pub struct InodeTable {
    by_ino: HashMap<u64, Slot>,
    by_node: HashMap<Node, u64>,
    next_ino: u64,
}

impl Default for InodeTable {
    fn default() -> Self {
        Self::new()
    }
}

impl InodeTable {
    pub fn new() -> InodeTable {
        let mut table = InodeTable {
            by_ino: HashMap::new(),
            by_node: HashMap::new(),
            next_ino: ROOT_INO + 1,
        };
        table.by_ino.insert(
            ROOT_INO,
            Slot {
                node: Node::Root,
                lookups: 1,
            },
        );
        table.by_node.insert(Node::Root, ROOT_INO);
        table
    }

    pub fn node(&self, ino: u64) -> Option<&Node> {
        self.by_ino.get(&ino).map(|s| &s.node)
    }

    /// The number of `node`, allocating one if needed, without counting a lookup (readdir).
    pub fn ino_of(&mut self, node: &Node) -> u64 {
        if let Some(ino) = self.by_node.get(node) {
            return *ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.by_ino.insert(
            ino,
            Slot {
                node: node.clone(),
                lookups: 0,
            },
        );
        self.by_node.insert(node.clone(), ino);
        ino
    }

    /// The number of `node`, counting one kernel lookup.
    pub fn lookup(&mut self, node: &Node) -> u64 {
        let ino = self.ino_of(node);
        if let Some(slot) = self.by_ino.get_mut(&ino) {
            slot.lookups += 1;
        }
        ino
    }

    /// The kernel dropped `n` lookups of `ino`.
    pub fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let Some(slot) = self.by_ino.get_mut(&ino) else {
            return;
        };
        slot.lookups = slot.lookups.saturating_sub(n);
        if slot.lookups == 0 {
            let node = self.by_ino.remove(&ino).map(|s| s.node);
            if let Some(node) = node {
                if self.by_node.get(&node) == Some(&ino) {
                    self.by_node.remove(&node);
                }
            }
        }
    }

    /// The next lookup of `node` gets a fresh number.
    pub fn detach(&mut self, node: &Node) {
        self.by_node.remove(node);
    }

    /// Detaches every node of `topic`.
    pub fn detach_topic(&mut self, topic: &str) {
        self.by_node.retain(|node, _| node.topic() != Some(topic));
    }

    pub fn len(&self) -> usize {
        self.by_ino.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ino.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn lookups_are_counted_and_forgotten() {
        let mut t = InodeTable::new();
        let topic = Node::Topic(Arc::from("t"));
        let a = t.lookup(&topic);
        assert_eq!(t.lookup(&topic), a);
        assert_eq!(t.node(a), Some(&topic));
        t.forget(a, 1);
        assert_eq!(t.node(a), Some(&topic));
        t.forget(a, 1);
        assert_eq!(t.node(a), None);
        let b = t.lookup(&topic);
        assert_ne!(a, b, "numbers are never reused");
    }

    #[test]
    fn detached_nodes_keep_their_number_until_forgotten() {
        let mut t = InodeTable::new();
        let topic = Node::Topic(Arc::from("t"));
        let other = Node::Topic(Arc::from("u"));
        let a = t.lookup(&topic);
        let u = t.lookup(&other);
        t.detach_topic("t");
        assert_eq!(t.node(a), Some(&topic));
        let b = t.lookup(&topic);
        assert_ne!(a, b);
        assert_eq!(t.lookup(&other), u);
        t.forget(a, 1);
        assert_eq!(t.node(a), None);
        assert_eq!(
            t.node(b),
            Some(&topic),
            "forgetting the old number keeps the new"
        );
        assert_eq!(t.node(ROOT_INO), Some(&Node::Root));
    }
}
