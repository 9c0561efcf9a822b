//! Durable writes whose flush wait happens outside the writer thread: Linux AIO.
//!
//! The writer hands a group's 4 KiB-aligned blocks to the kernel with `io_submit` on a segment
//! opened `O_DIRECT | O_DSYNC` (the write completes once it and the disk's cache flush are
//! done) and goes back to its queue. The completion is reported on an eventfd: a task on the
//! tokio runtime that waits for commits anyway reads it and answers the group ([`Direct::reap`]),
//! so at one request at a time neither thread sleeps on the disk (the writer used to sleep
//! twice per `fdatasync`: see docs/design/storage.md, "Context switches at c=1"). Without a
//! runtime, or when the writer needs the previous group finished (one group is in flight at a
//! time: the next one rewrites the same tail block), the writer waits for it itself.
//!
//! This module owns the system calls (`io_setup`, `io_submit`, `io_getevents`, `io_destroy`,
//! `eventfd`) and the memory the kernel writes from; it is the only place in the workspace
//! with `unsafe` code. Every buffer handed to the kernel lives in the in-flight slot until
//! its completion is reaped, and the AIO context is destroyed (which waits for what is still
//! in flight) before the slot is dropped.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError, Weak};

use super::index::Loc;
use super::writer::{answer, Done};
use super::Shared;
use crate::LogId;

/// Alignment and size unit of every direct write (the page size; a multiple of any disk's
/// logical block size).
pub const BLOCK: u64 = 4096;

/// `struct iocb` of `linux/aio_abi.h` (64-bit little-endian layout).
#[repr(C)]
#[derive(Default)]
struct Iocb {
    aio_data: u64,
    aio_key: u32,
    aio_rw_flags: i32,
    aio_lio_opcode: u16,
    aio_reqprio: i16,
    aio_fildes: u32,
    aio_buf: u64,
    aio_nbytes: u64,
    aio_offset: i64,
    aio_reserved2: u64,
    aio_flags: u32,
    aio_resfd: u32,
}

/// `struct io_event` of `linux/aio_abi.h`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

const IOCB_CMD_PWRITE: u16 = 1;
const IOCB_FLAG_RESFD: u32 = 1;

fn check(r: libc::c_long) -> std::io::Result<libc::c_long> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// An AIO context; destroying it waits for every operation still in flight.
struct Aio(libc::c_ulong);

impl Aio {
    fn new() -> std::io::Result<Aio> {
        let mut ctx: libc::c_ulong = 0;
        // SAFETY: io_setup writes the new context id into `ctx`, a valid u64.
        check(unsafe { libc::syscall(libc::SYS_io_setup, 1 as libc::c_long, &raw mut ctx) })?;
        Ok(Aio(ctx))
    }
}

impl Drop for Aio {
    fn drop(&mut self) {
        // SAFETY: the context came from io_setup and is destroyed once.
        unsafe { libc::syscall(libc::SYS_io_destroy, self.0) };
    }
}

/// Heap memory aligned to [`BLOCK`] for the kernel to write from.
struct BlockBuf {
    mem: Vec<u8>,
    start: usize,
    len: usize,
}

impl BlockBuf {
    /// `bytes` followed by zeros up to a multiple of [`BLOCK`].
    fn padded(bytes: &[u8]) -> BlockBuf {
        let len = (bytes.len() as u64).div_ceil(BLOCK) as usize * BLOCK as usize;
        let mut mem = vec![0u8; len + BLOCK as usize];
        let start = mem.as_ptr().align_offset(BLOCK as usize);
        mem[start..start + bytes.len()].copy_from_slice(bytes);
        BlockBuf { mem, start, len }
    }

    fn bytes(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }
}

/// A group handed to the kernel and not yet answered.
struct InFlight {
    /// What the kernel writes from (must outlive the operation).
    buf: BlockBuf,
    /// The segment it writes into (its descriptor must outlive the operation).
    file: Arc<File>,
    /// Where (for the synchronous write if the submission is refused).
    offset: u64,
    /// Entries that become readable from the segment once the write is durable.
    written: Vec<(LogId, Loc)>,
    /// Answered with the write's outcome.
    dones: Vec<Done>,
}

#[derive(Default)]
struct Slot {
    in_flight: Option<InFlight>,
    closed: bool,
}

/// The AIO context, its eventfd and the in-flight group of one log.
pub struct Direct {
    // Field order matters: the context is destroyed (waiting for the kernel) before the slot's
    // buffers are freed.
    aio: Aio,
    slot: Mutex<Slot>,
    efd: File,
    shared: Arc<Shared>,
}

/// Opens segment `path` for direct durable writes.
pub fn open_segment(path: &std::path::Path) -> std::io::Result<Arc<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
        .open(path)
        .map(Arc::new)
}

impl Direct {
    /// An AIO context with its eventfd (fails where the kernel or a seccomp profile refuses
    /// AIO; the writer then uses `pwrite` + `fdatasync`).
    pub fn new(shared: Arc<Shared>) -> std::io::Result<Arc<Direct>> {
        if cfg!(target_endian = "big") || !cfg!(target_pointer_width = "64") {
            return Err(std::io::ErrorKind::Unsupported.into());
        }
        let aio = Aio::new()?;
        // SAFETY: eventfd takes no pointers; a valid descriptor is owned from here on.
        let fd = check(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) }.into())?;
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let efd = File::from(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) });
        Ok(Arc::new(Direct {
            aio,
            slot: Mutex::new(Slot::default()),
            efd,
            shared,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `bytes` (the segment's tail block onwards) at `offset` (a multiple of [`BLOCK`])
    /// in `file`; `written` and `dones` are answered once it is durable. The previous group
    /// must be settled ([`Direct::settle`]). If the kernel refuses the submission the same
    /// blocks are written synchronously (a durable `pwrite` on the same handle) before this
    /// returns.
    pub fn submit(
        &self,
        file: Arc<File>,
        offset: u64,
        bytes: &[u8],
        written: Vec<(LogId, Loc)>,
        dones: Vec<Done>,
    ) {
        let buf = BlockBuf::padded(bytes);
        let mut iocb = Iocb {
            aio_lio_opcode: IOCB_CMD_PWRITE,
            aio_fildes: file.as_raw_fd() as u32,
            // (The Vec's heap memory does not move when the slot takes it.)
            aio_buf: buf.bytes().as_ptr() as u64,
            aio_nbytes: buf.len as u64,
            aio_offset: offset as i64,
            aio_flags: IOCB_FLAG_RESFD,
            aio_resfd: self.efd.as_raw_fd() as u32,
            ..Iocb::default()
        };
        // In the slot before the kernel has it, so the reaper never misses its completion
        // (the lock is not held across the submission).
        {
            let mut slot = self.lock();
            debug_assert!(slot.in_flight.is_none());
            slot.in_flight = Some(InFlight {
                buf,
                file,
                offset,
                written,
                dones,
            });
        }
        let mut list = [&raw mut iocb];
        // SAFETY: the iocb and the list are valid for the call (the kernel copies them); the
        // buffer and descriptor they name are kept in the slot until the completion is reaped
        // or the context destroyed (which waits for it).
        let r = check(unsafe {
            libc::syscall(
                libc::SYS_io_submit,
                self.aio.0,
                1 as libc::c_long,
                list.as_mut_ptr(),
            )
        });
        if matches!(r, Ok(1)) {
            return;
        }
        let e = match r {
            Ok(_) => std::io::Error::other("io_submit took no operation"),
            Err(e) => e,
        };
        // Nothing was submitted, so nothing can complete: the group is still in the slot.
        let Some(flight) = self.lock().in_flight.take() else {
            return;
        };
        tracing::debug!(error = %e, "raft log: io_submit refused; writing this group synchronously");
        let res = flight
            .file
            .write_all_at(flight.buf.bytes(), flight.offset)
            .map(|()| flight.buf.len);
        self.finish(flight, res);
    }

    /// Whether a group is in flight.
    pub fn busy(&self) -> bool {
        self.lock().in_flight.is_some()
    }

    /// Waits for the group in flight, if any, and answers it. Called by the writer.
    pub fn settle(&self) {
        let mut slot = self.lock();
        if slot.in_flight.is_none() {
            return;
        }
        let res = loop {
            match self.event(true) {
                Ok(Some(res)) => break res,
                Ok(None) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let flight = slot.in_flight.take();
                    drop(slot);
                    return self.abandon(flight, e);
                }
            }
        };
        let Some(flight) = slot.in_flight.take() else {
            return;
        };
        drop(slot);
        self.finish(flight, res);
    }

    /// Answers the group in flight if its write has completed; never waits (the writer may
    /// hold the slot while it waits itself: then it answers). Returns false once closed.
    pub fn reap(&self) -> bool {
        let mut slot = match self.slot.try_lock() {
            Ok(slot) => slot,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return true,
        };
        if slot.closed {
            return false;
        }
        if slot.in_flight.is_none() {
            return true;
        }
        let res = match self.event(false) {
            Ok(None) => return true,
            Ok(Some(res)) => res,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return true,
            Err(e) => {
                let flight = slot.in_flight.take();
                drop(slot);
                self.abandon(flight, e);
                return true;
            }
        };
        let Some(flight) = slot.in_flight.take() else {
            return true;
        };
        drop(slot);
        self.finish(flight, res);
        true
    }

    /// The outcome of the one operation in flight: waits for it (`wait`) or looks.
    fn event(&self, wait: bool) -> std::io::Result<Option<std::io::Result<usize>>> {
        let mut ev = [IoEvent::default()];
        let mut zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let timeout: *mut libc::timespec = if wait {
            std::ptr::null_mut()
        } else {
            &raw mut zero
        };
        // SAFETY: `ev` has room for the one event asked for; `timeout` is null or valid.
        let n = check(unsafe {
            libc::syscall(
                libc::SYS_io_getevents,
                self.aio.0,
                1 as libc::c_long,
                1 as libc::c_long,
                ev.as_mut_ptr(),
                timeout,
            )
        })?;
        if n == 0 {
            return Ok(None);
        }
        let res = ev[0].res;
        Ok(Some(if res < 0 {
            Err(std::io::Error::from_raw_os_error(-res as i32))
        } else {
            Ok(res as usize)
        }))
    }

    /// Fails the log and the group when the kernel cannot say what became of its write
    /// (`io_getevents` itself failed). The kernel may still read the group's buffer, so it
    /// is never freed (nothing more is written after a failure).
    fn abandon(&self, flight: Option<InFlight>, e: std::io::Error) {
        tracing::error!(error = %e, "raft log: cannot learn the outcome of a direct write");
        self.shared.fail(&e);
        if let Some(InFlight {
            buf, file, dones, ..
        }) = flight
        {
            std::mem::forget(buf);
            std::mem::forget(file);
            answer(dones, &Err(e));
        }
    }

    /// Answers a finished group: its entries become readable from the segment, its callers
    /// learn the outcome; a failed or short write fails the log.
    fn finish(&self, flight: InFlight, res: std::io::Result<usize>) {
        let res = match res {
            Ok(n) if n == flight.buf.len => Ok(()),
            Ok(n) => Err(std::io::Error::other(format!(
                "short direct write: {n} of {} bytes",
                flight.buf.len
            ))),
            Err(e) => Err(e),
        };
        match &res {
            Ok(()) => self.shared.written(flight.written),
            Err(e) => {
                tracing::error!(error = %e, "raft log write failed");
                self.shared.fail(e);
            }
        }
        answer(flight.dones, &res);
    }

    /// Settles what is in flight and stops the reaper task.
    pub fn close(&self) {
        self.settle();
        self.lock().closed = true;
        let _ = (&self.efd).write(&1u64.to_ne_bytes());
    }

    /// Starts the task that answers completed groups on the current tokio runtime; false
    /// (the writer then waits for each group itself) outside a runtime.
    pub fn spawn_reaper(this: &Arc<Direct>) -> bool {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let _enter = handle.enter();
        let fd = match this.efd.try_clone() {
            Ok(f) => f,
            Err(_) => return false,
        };
        // SAFETY: the AsyncFd owns the File, so its descriptor stays open and the same for
        // the AsyncFd's whole life.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        };
        let Ok(afd) = registered else {
            return false;
        };
        let weak: Weak<Direct> = Arc::downgrade(this);
        handle.spawn(async move {
            loop {
                let Ok(mut guard) = afd.readable().await else {
                    return;
                };
                let mut count = [0u8; 8];
                if let Err(e) = afd.get_ref().read(&mut count) {
                    if e.kind() == std::io::ErrorKind::WouldBlock {
                        guard.clear_ready();
                    }
                }
                let Some(direct) = weak.upgrade() else {
                    return;
                };
                if !direct.reap() {
                    return;
                }
            }
        });
        true
    }
}
