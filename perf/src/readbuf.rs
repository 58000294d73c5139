//! The read buffer of the perf tools' blocking MQTT connections (the replay broker's and the
//! test client's): bytes read and not yet consumed, compacted or grown only when a read needs
//! room.

/// A growable byte buffer with a consumed front. See the module documentation.
#[derive(Debug)]
pub(crate) struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    /// Empty, with `capacity` bytes of room.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            buf: vec![0; capacity],
            start: 0,
            end: 0,
        }
    }

    /// The bytes read and not consumed yet.
    pub(crate) fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Whether nothing is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// `n` bytes at the front are done with.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n;
    }

    /// Room for the next read: the buffer starts over when everything was consumed, moves the
    /// unconsumed bytes to the front when it is full, and doubles when they fill it (one frame
    /// bigger than the buffer).
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let len = self.buf.len() * 2;
                self.buf.resize(len, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into [`ReadBuf::spare`].
    pub(crate) fn filled(&mut self, n: usize) {
        self.end += n;
    }
}

#[cfg(test)]
mod tests {
    use super::ReadBuf;

    #[test]
    fn compacts_then_grows() {
        let mut b = ReadBuf::new(4);
        b.spare()[..4].copy_from_slice(b"abcd");
        b.filled(4);
        b.consume(3);
        assert_eq!(b.spare().len(), 3, "compacted: d moved to the front");
        assert_eq!(b.data(), b"d");
        b.spare()[..3].copy_from_slice(b"efg");
        b.filled(3);
        assert_eq!(b.spare().len(), 4, "full with one frame: doubled");
        assert_eq!(b.data(), b"defg");
        b.consume(4);
        assert!(b.is_empty());
        assert_eq!(b.spare().len(), 8, "starts over");
    }
}
