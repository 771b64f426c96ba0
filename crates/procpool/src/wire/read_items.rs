//! Reading the items of RUN and RESULTS frames, checked whole when a frame arrives.

use super::*;
use crate::error::TaskFailure;

/// Reads the items of a RUN or RESULTS body in order, from the layout byte on. The body was
/// checked whole when it arrived ([`ToWorker::decode`], [`FromWorker::decode`]), so reading
/// the items cannot fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ItemReader<'a> {
    pub(super) cursor: Cursor<'a>,
    /// Items not yet read.
    pub(super) left: usize,
    /// The common size of packed items; `None` for the sized layout.
    pub(super) packed: Option<usize>,
}

impl<'a> ItemReader<'a> {
    /// Reads the layout of `count` items at `cursor`, which moves past it: to the first item.
    pub(super) fn new(cursor: &mut Cursor<'a>, count: usize) -> Result<ItemReader<'a>, WireError> {
        let packed = match cursor.u8()? {
            LAYOUT_SIZED => None,
            LAYOUT_PACKED => Some(cursor.u32()? as usize),
            layout => return Err(WireError::UnknownLayout(layout)),
        };
        Ok(ItemReader {
            cursor: *cursor,
            left: count,
            packed,
        })
    }

    /// The next item's bytes when packed, else `None` (and nothing read).
    #[inline]
    pub(super) fn next_packed(&mut self) -> Option<&'a [u8]> {
        let size = self.packed?;
        Some(self.cursor.take(size).expect(CHECKED))
    }
}

pub(super) const CHECKED: &str = "a frame's items are checked whole when it arrives";

/// The arguments of the calls of a RUN frame, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RunItems<'a>(pub(super) ItemReader<'a>);

impl<'a> RunItems<'a> {
    /// The arguments of one call, outside any frame.
    pub(crate) fn one(args: &'a [u8]) -> RunItems<'a> {
        RunItems(ItemReader {
            cursor: Cursor { buf: args, pos: 0 },
            left: 1,
            packed: Some(args.len()),
        })
    }
}

impl<'a> Iterator for RunItems<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let items = &mut self.0;
        if items.left == 0 {
            return None;
        }
        items.left -= 1;
        Some(match items.next_packed() {
            Some(item) => item,
            None => items.cursor.bytes().expect(CHECKED),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.0.left, Some(self.0.left))
    }
}

impl ExactSizeIterator for RunItems<'_> {}

/// Where [`ResultItems`] stand in a RESULTS body, to go on from there later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ResultsAt {
    pub(super) pos: usize,
    pub(super) left: usize,
}

/// Reads the outcomes of the calls of a RESULTS body that [`FromWorker::decode`] accepted,
/// in order.
pub(crate) struct ResultItems<'a>(pub(super) ItemReader<'a>);

impl<'a> ResultItems<'a> {
    /// The outcomes of a RESULTS body, from the first.
    pub(crate) fn new(body: &'a [u8]) -> ResultItems<'a> {
        // Past the tag and the job, to the count, then past the count of descriptors.
        let mut cursor = Cursor { buf: body, pos: 9 };
        let count = cursor.u32().expect(CHECKED) as usize;
        cursor.u32().expect(CHECKED);
        ResultItems(ItemReader::new(&mut cursor, count).expect(CHECKED))
    }

    /// The outcomes of a RESULTS body, from where [`ResultItems::position`] said.
    pub(crate) fn at(body: &'a [u8], at: ResultsAt) -> ResultItems<'a> {
        let mut items = ResultItems::new(body);
        items.0.cursor.pos = at.pos;
        items.0.left = at.left;
        items
    }

    /// Where the next outcome starts.
    pub(crate) fn position(&self) -> ResultsAt {
        ResultsAt {
            pos: self.0.cursor.pos,
            left: self.0.left,
        }
    }
}

impl<'a> ResultItems<'a> {
    /// The results left, as plain bytes, if the body is packed (every call succeeded and
    /// every result takes the same size): a loop over them has nothing to check per item.
    pub(crate) fn packed(&self) -> Option<PackedItems<'a>> {
        let size = self.0.packed?;
        let cursor = self.0.cursor;
        Some(PackedItems {
            rest: &cursor.buf[cursor.pos..],
            size,
            left: self.0.left,
        })
    }
}

/// The items of a packed body, each `size` bytes; see [`ResultItems::packed`].
pub(crate) struct PackedItems<'a> {
    pub(super) rest: &'a [u8],
    pub(super) size: usize,
    pub(super) left: usize,
}

impl<'a> Iterator for PackedItems<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // The body was checked to hold `left` items of `size` bytes.
        let (item, rest) = self.rest.split_at(self.size);
        self.rest = rest;
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for PackedItems<'_> {}

impl<'a> Iterator for ResultItems<'a> {
    /// One call's encoded result, or how it failed.
    type Item = Result<&'a [u8], TaskFailure>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let items = &mut self.0;
        if items.left == 0 {
            return None;
        }
        items.left -= 1;
        if let Some(item) = items.next_packed() {
            return Some(Ok(item));
        }
        let item = match items.cursor.u8() {
            Ok(0) => items.cursor.bytes().map(Ok),
            Ok(1) => items.cursor.failure().map(Err),
            Ok(tag) => Err(WireError::UnknownTag(tag)),
            Err(error) => Err(error),
        };
        Some(item.expect(CHECKED))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.0.left, Some(self.0.left))
    }
}

impl ExactSizeIterator for ResultItems<'_> {}
