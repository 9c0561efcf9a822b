//! Record framing shared by every file the store writes (log segments, snapshots, outbox).
//!
//! Owns one rule: a record on disk is `len: u32 LE | crc: u32 LE | kind: u8 | payload`, where
//! `len` counts `kind` and `payload` and `crc` is the CRC-32 (IEEE) of those same bytes. A
//! reader accepts a record only when the whole frame is present and the CRC matches, so a write
//! torn by a crash (or a flipped bit) is never taken for data: [`FrameReader`] stops there and
//! says where. [`lost_a_sector`] and [`frames_after`] tell a readers' caller whether the bad
//! record is a write cut short or damage with good records after it.

/// Bytes before a frame's `kind`: length and CRC.
pub const FRAME_HEADER: usize = 8;

/// Largest `kind + payload` a reader accepts (a corrupt length must not make it allocate
/// gigabytes). Log entries are batches of at most a few thousand commands, far below this.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// Appends one frame to `out`.
pub fn put_frame(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let len = u32::try_from(payload.len() + 1).expect("frame below 4 GiB");
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(payload);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
}

/// Reads one whole frame of kind `kind` from a stream and returns its payload; `what` names
/// the record in the error ("meta", "registry").
pub fn read_frame(r: &mut impl std::io::Read, kind: u8, what: &str) -> Result<Vec<u8>, String> {
    let mut header = [0u8; FRAME_HEADER];
    r.read_exact(&mut header)
        .map_err(|e| format!("no {what}: {e}"))?;
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4")) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(format!("impossible {what} length {len}"));
    }
    let mut frame = header.to_vec();
    frame.resize(FRAME_HEADER + len, 0);
    r.read_exact(&mut frame[FRAME_HEADER..])
        .map_err(|e| format!("{what} cut short: {e}"))?;
    let (found, payload, _) = check_frame(&frame).map_err(|d| format!("{what}: {d}"))?;
    if found != kind {
        return Err(format!("record is kind {found}, not the {what}"));
    }
    Ok(payload.to_vec())
}

/// One frame found by a [`FrameReader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Offset of the frame's first byte in the buffer.
    pub offset: usize,
    /// Length of the whole frame (header included).
    pub size: usize,
    /// Record kind.
    pub kind: u8,
    /// Record payload.
    pub payload: &'a [u8],
}

/// Why a [`FrameReader`] stopped before the end of its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameDefect {
    /// Fewer bytes left than the frame header or the length it announces: a torn write.
    Truncated,
    /// The announced length is zero or above [`MAX_FRAME`].
    BadLength(u32),
    /// The CRC does not match the bytes.
    BadCrc,
}

impl std::fmt::Display for FrameDefect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameDefect::Truncated => write!(f, "truncated record"),
            FrameDefect::BadLength(n) => write!(f, "impossible record length {n}"),
            FrameDefect::BadCrc => write!(f, "record checksum mismatch"),
        }
    }
}

/// Iterates over the frames of a buffer; after the last good frame, [`FrameReader::defect`]
/// tells whether the rest of the buffer was clean (empty) or damaged, and where.
#[derive(Debug)]
pub struct FrameReader<'a> {
    buf: &'a [u8],
    pos: usize,
    defect: Option<(usize, FrameDefect)>,
}

impl<'a> FrameReader<'a> {
    /// Reads frames from `buf[start..]`.
    pub fn new(buf: &'a [u8], start: usize) -> Self {
        FrameReader {
            buf,
            pos: start,
            defect: None,
        }
    }

    /// Where reading stopped with a damaged frame, if it did.
    pub fn defect(&self) -> Option<(usize, FrameDefect)> {
        self.defect
    }

    /// Offset just after the last good frame.
    pub fn position(&self) -> usize {
        self.pos
    }
}

/// Checks one frame at the start of `bytes` (exactly one frame long or longer).
pub fn check_frame(bytes: &[u8]) -> Result<(u8, &[u8], usize), FrameDefect> {
    if bytes.len() < FRAME_HEADER + 1 {
        return Err(FrameDefect::Truncated);
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if len == 0 || len as usize > MAX_FRAME {
        return Err(FrameDefect::BadLength(len));
    }
    let end = FRAME_HEADER + len as usize;
    if bytes.len() < end {
        return Err(FrameDefect::Truncated);
    }
    let body = &bytes[FRAME_HEADER..end];
    if crc32fast::hash(body) != crc {
        return Err(FrameDefect::BadCrc);
    }
    Ok((body[0], &body[1..], end))
}

/// Smallest unit a disk writes whole: a write a power cut interrupted leaves whole sectors of
/// what was there before (4 KiB sectors are eight of these).
pub const SECTOR: usize = 512;

/// Whether the damaged record at `offset` shows a sector that never reached the disk, in a
/// file written only into space that held zeros: its bytes in its first sector are all zero
/// (that sector still holds what was there before), or it covers a later sector that is zero
/// from end to end. That is the mark of a write cut short by a crash (the rule etcd's WAL
/// uses), which a flipped bit does not leave.
pub fn lost_a_sector(bytes: &[u8], offset: usize, defect: FrameDefect) -> bool {
    // The record's extent as its header announces it (within the file); just the header when
    // the length is impossible.
    let announced = match defect {
        FrameDefect::BadLength(_) => FRAME_HEADER,
        FrameDefect::Truncated | FrameDefect::BadCrc => bytes
            .get(offset..offset + 4)
            .map_or(0, |b| {
                u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize
            })
            .saturating_add(FRAME_HEADER),
    };
    let end = offset.saturating_add(announced).min(bytes.len());
    if offset >= end {
        return false;
    }
    let first_end = (offset / SECTOR + 1) * SECTOR;
    if bytes[offset..end.min(first_end)].iter().all(|b| *b == 0) {
        return true;
    }
    (first_end..end).step_by(SECTOR).any(|s| {
        bytes[s..(s + SECTOR).min(bytes.len())]
            .iter()
            .all(|b| *b == 0)
    })
}

/// Every valid frame of one of `kinds` that starts after `offset`, found by trying each byte
/// position: after a damaged record, its length cannot be trusted to say where the next one
/// starts. The kind byte is looked at before the CRC, so that garbage costs little.
pub fn frames_after<'a>(
    bytes: &'a [u8],
    offset: usize,
    kinds: &'a [u8],
) -> impl Iterator<Item = Frame<'a>> + 'a {
    (offset + 1..bytes.len().saturating_sub(FRAME_HEADER)).filter_map(move |pos| {
        if !kinds.contains(bytes.get(pos + FRAME_HEADER)?) {
            return None;
        }
        let (kind, payload, size) = check_frame(&bytes[pos..]).ok()?;
        Some(Frame {
            offset: pos,
            size,
            kind,
            payload,
        })
    })
}

impl<'a> Iterator for FrameReader<'a> {
    type Item = Frame<'a>;

    fn next(&mut self) -> Option<Frame<'a>> {
        if self.defect.is_some() || self.pos >= self.buf.len() {
            return None;
        }
        match check_frame(&self.buf[self.pos..]) {
            Ok((kind, payload, size)) => {
                let frame = Frame {
                    offset: self.pos,
                    size,
                    kind,
                    payload,
                };
                self.pos += size;
                Some(frame)
            }
            Err(defect) => {
                self.defect = Some((self.pos, defect));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_frames() -> Vec<u8> {
        let mut buf = Vec::new();
        put_frame(&mut buf, 1, b"hello");
        put_frame(&mut buf, 2, b"");
        buf
    }

    #[test]
    fn frames_round_trip() {
        let buf = two_frames();
        let mut r = FrameReader::new(&buf, 0);
        let a = r.next().unwrap();
        assert_eq!((a.kind, a.payload, a.offset), (1, &b"hello"[..], 0));
        let b = r.next().unwrap();
        assert_eq!((b.kind, b.payload, b.offset), (2, &b""[..], a.size));
        assert!(r.next().is_none());
        assert_eq!(r.defect(), None);
        assert_eq!(r.position(), buf.len());
    }

    #[test]
    fn every_torn_prefix_is_detected() {
        let buf = two_frames();
        let first = check_frame(&buf).unwrap().2;
        for cut in 0..buf.len() {
            let mut r = FrameReader::new(&buf[..cut], 0);
            let good: Vec<_> = r.by_ref().collect();
            let expect_good = usize::from(cut >= first);
            assert_eq!(good.len(), expect_good, "cut at {cut}");
            if cut != first && cut != 0 {
                assert_eq!(r.defect().map(|d| d.1), Some(FrameDefect::Truncated));
            }
        }
    }

    #[test]
    fn flipped_bits_are_detected() {
        let buf = two_frames();
        for byte in 0..buf.len() {
            let mut bad = buf.clone();
            bad[byte] ^= 0x10;
            let mut r = FrameReader::new(&bad, 0);
            let n = r.by_ref().count();
            assert!(
                n < 2 || r.defect().is_none() && n == 2 && bad == buf,
                "byte {byte}"
            );
            assert!(r.defect().is_some(), "flip at {byte} not detected");
        }
    }

    #[test]
    fn absurd_length_is_rejected_without_allocating() {
        let mut buf = vec![0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0, 1];
        buf.extend_from_slice(&[0; 16]);
        assert_eq!(check_frame(&buf), Err(FrameDefect::BadLength(0x7fff_ffff)));
    }
}
