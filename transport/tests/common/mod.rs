//! A node whose folders are each owned by a task of their own
//! (`transport::link::spawn_owner`), read and changed from the test's body.

use std::collections::BTreeMap;
use std::sync::Mutex;

use fsync_core::chunks::Chunks;
use fsync_core::folder::Folder;
use transport::link::{spawn_owner, OwnedFolder};
use transport::Node;

/// A folder and its chunks, as a call on its owner sees them.
pub(crate) struct State<'a> {
    pub(crate) folder: &'a mut Folder,
    #[allow(dead_code)]
    pub(crate) chunks: &'a mut Chunks,
}

pub(crate) struct TestNode {
    pub(crate) node: Node,
    folders: Mutex<BTreeMap<String, OwnedFolder>>,
}

impl std::ops::Deref for TestNode {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl TestNode {
    pub(crate) fn new(node: Node) -> Self {
        TestNode { node, folders: Mutex::new(BTreeMap::new()) }
    }

    /// Shares `folder` under `name`, owned by a task of its own.
    pub(crate) fn add_folder(&self, name: &str, folder: Folder) {
        let (port, owned) = spawn_owner(folder, Chunks::default());
        self.node.add_folder(name, port);
        self.folders.lock().expect("folders").insert(name.to_owned(), owned);
    }

    /// Runs `f` on folder `name` in its owner; peers hear of any change.
    pub(crate) fn read<R: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce(&mut State<'_>) -> R + Send + 'static,
    ) -> Option<R> {
        let owned = self.folders.lock().expect("folders").get(name)?.clone();
        owned.call_blocking(move |folder, chunks| f(&mut State { folder, chunks }))
    }

    /// [`TestNode::read`], for a change.
    pub(crate) fn edit<R: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce(&mut State<'_>) -> R + Send + 'static,
    ) -> Option<R> {
        self.read(name, f)
    }
}
