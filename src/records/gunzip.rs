//! A multi-member gzip decoder (RFC 1952) whose inflate state is handed from one
//! file to the next.
//!
//! flate2's `MultiGzDecoder` allocates a new inflate state (with its 32 KiB window)
//! per stream; a day of ~100,000 small delivery files then spends more time in malloc
//! and in setting up that state than in inflating. This decoder parses the gzip
//! framing itself, inflates each member with a [`Decompress`] it is given back via
//! [`Gunzip::into_parts`], and checks each member's CRC-32 and length.

use std::io::{self, BufRead, Read};

use flate2::{Crc, Decompress, FlushDecompress, Status};

const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a member's header (the first, or one after a trailer).
    Header,
    /// Inside a member's deflate data.
    Body,
    /// After a member's trailer: another member, or the end.
    Between,
    Done,
}

/// Decodes every gzip member of `inner` in turn.
pub struct Gunzip<R> {
    inner: R,
    inflate: Decompress,
    crc: Crc,
    state: State,
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

impl<R: BufRead> Gunzip<R> {
    /// A decoder over `inner`, reusing `inflate` (a raw-deflate state) when given.
    pub fn new(inner: R, inflate: Option<Decompress>) -> Self {
        Gunzip {
            inner,
            inflate: inflate.unwrap_or_else(|| Decompress::new(false)),
            crc: Crc::new(),
            state: State::Header,
        }
    }

    /// The source and the inflate state, for the next file.
    pub fn into_parts(self) -> (R, Decompress) {
        (self.inner, self.inflate)
    }

    fn byte(&mut self) -> io::Result<u8> {
        let b =
            *self.inner.fill_buf()?.first().ok_or_else(|| {
                io::Error::new(io::ErrorKind::UnexpectedEof, "truncated gzip header")
            })?;
        self.inner.consume(1);
        Ok(b)
    }

    fn exact<const N: usize>(&mut self, what: &str) -> io::Result<[u8; N]> {
        let mut out = [0u8; N];
        let mut n = 0;
        while n < N {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("truncated gzip {what}"),
                ));
            }
            let k = buf.len().min(N - n);
            out[n..n + k].copy_from_slice(&buf[..k]);
            self.inner.consume(k);
            n += k;
        }
        Ok(out)
    }

    /// Reads a member's header and readies the inflate state for its data.
    fn header(&mut self) -> io::Result<()> {
        let h: [u8; 10] = self.exact("header")?;
        if h[0] != 0x1f || h[1] != 0x8b {
            return Err(invalid("invalid gzip header"));
        }
        if h[2] != 8 {
            return Err(invalid("unsupported gzip compression method"));
        }
        let flags = h[3];
        if flags & 0xe0 != 0 {
            return Err(invalid("invalid gzip header flags"));
        }
        if flags & FEXTRA != 0 {
            let len = u16::from_le_bytes(self.exact("header")?);
            for _ in 0..len {
                self.byte()?;
            }
        }
        for field in [FNAME, FCOMMENT] {
            if flags & field != 0 {
                while self.byte()? != 0 {}
            }
        }
        if flags & FHCRC != 0 {
            self.exact::<2>("header")?;
        }
        self.inflate.reset(false);
        self.crc.reset();
        Ok(())
    }

    /// Reads and checks a member's trailer.
    fn trailer(&mut self) -> io::Result<()> {
        let t: [u8; 8] = self.exact("trailer")?;
        let crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
        let size = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
        if crc != self.crc.sum() {
            return Err(invalid("gzip CRC-32 mismatch: the data is corrupt"));
        }
        if size != self.crc.amount() {
            return Err(invalid("gzip length mismatch: the data is corrupt"));
        }
        Ok(())
    }
}

impl<R: BufRead> Read for Gunzip<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            match self.state {
                State::Done => return Ok(0),
                State::Header => {
                    self.header()?;
                    self.state = State::Body;
                }
                State::Between => {
                    if self.inner.fill_buf()?.is_empty() {
                        self.state = State::Done;
                    } else {
                        self.state = State::Header;
                    }
                }
                State::Body => {
                    let input = self.inner.fill_buf()?;
                    let eof = input.is_empty();
                    let (in0, out0) = (self.inflate.total_in(), self.inflate.total_out());
                    let status = self
                        .inflate
                        .decompress(input, out, FlushDecompress::None)
                        .map_err(|e| invalid(&format!("corrupt deflate stream: {e}")))?;
                    let consumed = (self.inflate.total_in() - in0) as usize;
                    let produced = (self.inflate.total_out() - out0) as usize;
                    self.inner.consume(consumed);
                    self.crc.update(&out[..produced]);
                    if status == Status::StreamEnd {
                        self.trailer()?;
                        self.state = State::Between;
                    } else if eof && produced == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "truncated gzip stream",
                        ));
                    }
                    if produced > 0 {
                        return Ok(produced);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::{Compression, GzBuilder};
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Reads all of `src` through a reader whose buffer holds `cap` bytes, in reads of
    /// `chunk` bytes.
    fn decode(
        src: &[u8],
        cap: usize,
        chunk: usize,
        inflate: Option<Decompress>,
    ) -> (io::Result<Vec<u8>>, Decompress) {
        let mut d = Gunzip::new(io::BufReader::with_capacity(cap, src), inflate);
        let mut out = Vec::new();
        let mut buf = vec![0u8; chunk];
        let r = loop {
            match d.read(&mut buf) {
                Ok(0) => break Ok(out),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => break Err(e),
            }
        };
        (r, d.into_parts().1)
    }

    #[test]
    fn members_headers_and_reuse() {
        let a: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let b = b"{\"Records\":[]}".to_vec();
        // A member with every optional header field.
        let mut fancy = GzBuilder::new()
            .extra(vec![1, 2, 3])
            .filename("x.json")
            .comment("hello")
            .write(Vec::new(), Compression::fast());
        fancy.write_all(&b).unwrap();
        let fancy = fancy.finish().unwrap();
        let mut multi = gz(&a);
        multi.extend(&fancy);
        multi.extend(gz(b""));
        multi.extend(gz(&b));
        let mut want = a.clone();
        want.extend(&b);
        want.extend(&b);

        let mut state = None;
        for (cap, chunk) in [(1, 1), (3, 7), (8192, 1000), (1 << 20, 1 << 20)] {
            let (r, z) = decode(&multi, cap, chunk, state.take());
            assert_eq!(r.unwrap(), want, "cap {cap} chunk {chunk}");
            // The state handed on decodes the next stream just as well.
            let (r, z) = decode(&gz(&b), cap, chunk, Some(z));
            assert_eq!(r.unwrap(), b);
            state = Some(z);
        }
        // Identical to flate2's own decoder.
        let mut theirs = Vec::new();
        flate2::read::MultiGzDecoder::new(&multi[..])
            .read_to_end(&mut theirs)
            .unwrap();
        assert_eq!(theirs, want);
    }

    #[test]
    fn damage_is_an_error() {
        let good = gz(&(0..50_000u32)
            .flat_map(|i| i.to_le_bytes())
            .collect::<Vec<_>>());
        let mut bad_crc = good.clone();
        let n = bad_crc.len();
        bad_crc[n - 8] ^= 1;
        let mut bad_len = good.clone();
        bad_len[n - 1] ^= 1;
        let mut bad_data = good.clone();
        for b in &mut bad_data[100..140] {
            *b = 0xff;
        }
        let mut trailing = good.clone();
        trailing.extend(b"garbage after the member");
        let mut bad_flags = good.clone();
        bad_flags[3] = 0x80;
        let cases: [(&str, &[u8], &str); 7] = [
            ("crc", &bad_crc, "CRC-32"),
            ("length", &bad_len, "length"),
            ("data", &bad_data, ""),
            ("truncated data", &good[..n / 2], "truncated"),
            (
                "truncated trailer",
                &good[..n - 3],
                "truncated gzip trailer",
            ),
            ("trailing garbage", &trailing, "invalid gzip header"),
            ("flags", &bad_flags, "flags"),
        ];
        for (what, src, msg) in cases {
            let (r, _) = decode(src, 4096, 4096, None);
            let e = r.expect_err(what).to_string();
            assert!(e.contains(msg), "{what}: {e}");
        }
        // A state left mid-stream by an error is reset for the next file.
        let (_, z) = decode(&bad_data, 4096, 4096, None);
        let (r, _) = decode(&good, 4096, 4096, Some(z));
        assert!(r.is_ok());
    }
}
