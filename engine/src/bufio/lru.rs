//! Intrusive doubly linked lists over a shard's slot slab.
//!
//! Each shard keeps its entries in a slab (`Vec`) and threads its clean LRU,
//! dirty LRU and pinned list through `prev`/`next` slot numbers stored in
//! the entries themselves, so linking, unlinking and moving to the front are
//! O(1) with no allocation. The front is the most recently linked entry; the
//! back is the oldest (the eviction / writeback end).

/// "No slot": the end of a list.
pub(crate) const NIL: u32 = u32::MAX;

/// The list links stored in each slab entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Links {
    pub(crate) prev: u32,
    pub(crate) next: u32,
}

impl Default for Links {
    fn default() -> Self {
        Links {
            prev: NIL,
            next: NIL,
        }
    }
}

/// A slab whose entries carry [`Links`].
pub(crate) trait LinkSlab {
    fn links(&self, id: u32) -> Links;
    fn links_mut(&mut self, id: u32) -> &mut Links;
}

/// One list: head (newest), tail (oldest), length.
#[derive(Debug)]
pub(crate) struct LruList {
    head: u32,
    tail: u32,
    len: usize,
}

impl LruList {
    pub(crate) const fn new() -> Self {
        LruList {
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The oldest entry.
    pub(crate) fn back(&self) -> Option<u32> {
        (self.tail != NIL).then_some(self.tail)
    }

    /// Link `id` (not on any list) at the front.
    pub(crate) fn push_front<S: LinkSlab + ?Sized>(&mut self, slab: &mut S, id: u32) {
        let old_head = self.head;
        *slab.links_mut(id) = Links {
            prev: NIL,
            next: old_head,
        };
        if old_head == NIL {
            self.tail = id;
        } else {
            slab.links_mut(old_head).prev = id;
        }
        self.head = id;
        self.len += 1;
    }

    /// Unlink `id`, which must be on this list.
    pub(crate) fn remove<S: LinkSlab + ?Sized>(&mut self, slab: &mut S, id: u32) {
        let Links { prev, next } = slab.links(id);
        if prev == NIL {
            debug_assert_eq!(self.head, id, "slot {id} is not on this list");
            self.head = next;
        } else {
            slab.links_mut(prev).next = next;
        }
        if next == NIL {
            debug_assert_eq!(self.tail, id, "slot {id} is not on this list");
            self.tail = prev;
        } else {
            slab.links_mut(next).prev = prev;
        }
        *slab.links_mut(id) = Links::default();
        self.len -= 1;
    }

    /// Walk from the oldest entry towards the newest.
    pub(crate) fn iter_from_back<'s, S: LinkSlab + ?Sized>(
        &self,
        slab: &'s S,
    ) -> impl Iterator<Item = u32> + 's {
        let mut cursor = self.tail;
        std::iter::from_fn(move || {
            if cursor == NIL {
                return None;
            }
            let id = cursor;
            cursor = slab.links(id).prev;
            Some(id)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Slab(Vec<Links>);

    impl LinkSlab for Slab {
        fn links(&self, id: u32) -> Links {
            self.0[id as usize]
        }
        fn links_mut(&mut self, id: u32) -> &mut Links {
            &mut self.0[id as usize]
        }
    }

    fn order(list: &LruList, slab: &Slab) -> Vec<u32> {
        list.iter_from_back(slab).collect()
    }

    #[test]
    fn push_remove_and_walk() {
        let mut slab = Slab(vec![Links::default(); 5]);
        let mut list = LruList::new();
        assert_eq!(list.back(), None);
        for id in 0..5 {
            list.push_front(&mut slab, id);
        }
        assert_eq!(order(&list, &slab), vec![0, 1, 2, 3, 4]);
        list.remove(&mut slab, 0); // tail
        list.remove(&mut slab, 4); // head
        list.remove(&mut slab, 2); // middle
        assert_eq!(order(&list, &slab), vec![1, 3]);
        assert_eq!(list.len(), 2);
        assert_eq!(list.back(), Some(1));
        list.remove(&mut slab, 1); // move to front: remove then push
        list.push_front(&mut slab, 1);
        assert_eq!(order(&list, &slab), vec![3, 1]);
        list.remove(&mut slab, 3);
        list.remove(&mut slab, 1);
        assert_eq!(list.len(), 0);
        assert_eq!(list.back(), None);
        assert_eq!(slab.links(1), Links::default());
    }
}
