//! Pages: storage for what a shard keeps for its whole run (the inventory's rows, the
//! delivery index), grown in large pages that never move. Growing a `Vec` by doubling,
//! or keeping many small `String`s, beside the records stage's transient buffers leaves
//! freed holes that the allocator cannot give back. Measured on the benchmark's days
//! (BENCHMARKS.md, blocks 10 and 11): the inventory's rows, 71 MiB of peak RSS grown
//! by doubling, 69 in pages; the delivery index, one `String` per folder and per file
//! of earlier events (~7,000 for the two-day event day), 95 MiB, in pages 43 (42
//! without an index).

/// A list that grows in pages of `N` items: adding never moves what is in it, so
/// growth leaves no freed half-size buffers behind while the shard's other buffers
/// are live.
#[derive(Debug)]
pub struct Pages<T, const N: usize> {
    pages: Vec<Vec<T>>,
    len: usize,
}

impl<T, const N: usize> Default for Pages<T, N> {
    fn default() -> Self {
        Pages {
            pages: Vec::new(),
            len: 0,
        }
    }
}

impl<T, const N: usize> Pages<T, N> {
    pub fn push(&mut self, item: T) {
        if self.pages.last().is_none_or(|p| p.len() == N) {
            self.pages.push(Vec::with_capacity(N));
        }
        self.pages.last_mut().expect("a page").push(item);
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.pages.iter().flatten()
    }
}

impl<T, const N: usize> std::ops::Index<usize> for Pages<T, N> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        &self.pages[i / N][i % N]
    }
}

impl<T, const N: usize> std::ops::IndexMut<usize> for Pages<T, N> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.pages[i / N][i % N]
    }
}

/// Bytes kept in pages of [`TEXT_PAGE`]; each item whole in one page, found by its
/// offset (page × `TEXT_PAGE` + where in it).
#[derive(Debug, Default)]
pub struct Text(Vec<Vec<u8>>);

pub const TEXT_PAGE: usize = 256 * 1024;

impl Text {
    /// Adds `parts` end to end (at most `TEXT_PAGE` bytes); where they begin.
    pub fn append(&mut self, parts: &[&[u8]]) -> u32 {
        let n: usize = parts.iter().map(|p| p.len()).sum();
        if self.0.last().is_none_or(|p| p.len() + n > TEXT_PAGE) {
            self.0.push(Vec::with_capacity(TEXT_PAGE));
        }
        let page = self.0.len() - 1;
        let last = &mut self.0[page];
        let at = page * TEXT_PAGE + last.len();
        for p in parts {
            last.extend_from_slice(p);
        }
        at as u32
    }

    pub fn get(&self, at: u32, len: usize) -> &[u8] {
        let at = at as usize;
        &self.0[at / TEXT_PAGE][at % TEXT_PAGE..at % TEXT_PAGE + len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages and text keep each item where it was put, across pages; an item never
    /// straddles two.
    #[test]
    fn pages_keep_items_in_place() {
        let mut p: Pages<u32, 3> = Pages::default();
        for i in 0..10 {
            p.push(i);
        }
        p[7] += 100;
        assert_eq!(p.len(), 10);
        assert_eq!(
            p.iter().copied().collect::<Vec<_>>(),
            [0, 1, 2, 3, 4, 5, 6, 107, 8, 9]
        );
        let mut t = Text::default();
        let item = vec![b'x'; 1000];
        let ats: Vec<u32> = (0..600).map(|i| t.append(&[&item, &[i as u8]])).collect();
        assert!(t.0.len() > 2);
        for (i, at) in ats.iter().enumerate() {
            let got = t.get(*at, 1001);
            assert_eq!((&got[..1000], got[1000]), (&item[..], i as u8));
        }
    }
}
