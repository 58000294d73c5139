//! [`IoChunks`]: a list of `Bytes` written with one `writev` (io_uring `IORING_OP_WRITEV` or
//! `writev(2)`), so that forwarded payloads go from the read buffer of one connection to the
//! socket of another without a copy. The list and its `iovec` array are reused from write to
//! write: no allocation per message once they have grown to the batch size.
//!
//! This is the crate's one piece of `unsafe`: monoio's `IoVecBuf` is an unsafe trait, because
//! the kernel reads the memory the `iovec`s point to while the operation runs.

#![allow(unsafe_code)]

use std::collections::VecDeque;

use bytes::{Buf, Bytes};
use monoio::buf::IoVecBuf;

/// The most `iovec` entries passed to one call (Linux `IOV_MAX`).
pub(crate) const MAX_IOVECS: usize = 1024;

/// Pieces to write in order. See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct IoChunks {
    chunks: VecDeque<Bytes>,
    iovecs: Vec<libc::iovec>,
    len: usize,
}

impl IoChunks {
    /// Empty.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Appends pieces (as [`crate::mqtt::session::Session::poll_transmit_vectored`] gives them).
    pub(crate) fn extend(&mut self, pieces: &mut Vec<Bytes>) {
        for p in pieces.drain(..) {
            if !p.is_empty() {
                self.len += p.len();
                self.chunks.push_back(p);
            }
        }
    }

    /// Bytes not written yet.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Nothing left to write.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Points the `iovec` array at the first [`MAX_IOVECS`] pieces; call before each write.
    pub(crate) fn prepare(&mut self) {
        self.iovecs.clear();
        for c in self.chunks.iter().take(MAX_IOVECS) {
            self.iovecs.push(libc::iovec {
                iov_base: c.as_ptr() as *mut libc::c_void,
                iov_len: c.len(),
            });
        }
    }

    /// `n` bytes were written: drops them from the front.
    pub(crate) fn advance(&mut self, mut n: usize) {
        self.len -= n.min(self.len);
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if n >= front.len() {
                n -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
        self.iovecs.clear();
    }
}

// SAFETY: the pointers and lengths in `iovecs` come from the `Bytes` in `chunks`, which the
// struct owns for as long as the operation holds it (monoio moves the whole buffer into the
// operation and gives it back on completion). Moving `IoChunks` moves neither the `Bytes`' heap
// memory nor the `Vec`'s, so the pointers stay valid; `prepare` rebuilds them after any change.
unsafe impl IoVecBuf for IoChunks {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iovecs.as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        self.iovecs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_across_pieces() {
        let mut c = IoChunks::new();
        let mut v = vec![
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from_static(b"defg"),
        ];
        c.extend(&mut v);
        assert!(v.is_empty());
        assert_eq!(c.len(), 7);
        c.prepare();
        assert_eq!(c.read_iovec_len(), 2);
        c.advance(4);
        assert_eq!(c.len(), 3);
        c.prepare();
        assert_eq!(c.read_iovec_len(), 1);
        assert_eq!(c.chunks[0], Bytes::from_static(b"efg"));
        c.advance(3);
        assert!(c.is_empty());
    }
}
