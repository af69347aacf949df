//! Safe handles over the C interface of `csrc/collective.cpp`: c10d stores and process groups.
//!
//! Every fallible C function returns null or a `malloc`ed message of what C++ threw; [`check`]
//! turns it into a [`CppError`] and frees it. The handles free their C++ object on drop.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::ptr::NonNull;
use std::time::Duration;

use tch::Tensor;

#[repr(C)]
struct RawStore {
    _private: [u8; 0],
}

#[repr(C)]
struct RawGroup {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn gantry_free(p: *mut c_void);
    fn gantry_nccl_built() -> c_int;
    fn gantry_store_open(
        host: *const c_char,
        port: u16,
        is_server: c_int,
        timeout_ms: i64,
        out: *mut *mut RawStore,
        bound_port: *mut u16,
    ) -> *mut c_char;
    fn gantry_store_prefixed(base: *mut RawStore, prefix: *const c_char, out: *mut *mut RawStore) -> *mut c_char;
    fn gantry_store_free(store: *mut RawStore);
    fn gantry_store_set(store: *mut RawStore, key: *const c_char, value: *const u8, len: usize) -> *mut c_char;
    fn gantry_store_get(
        store: *mut RawStore,
        key: *const c_char,
        timeout_ms: i64,
        value: *mut *mut u8,
        len: *mut usize,
    ) -> *mut c_char;
    fn gantry_store_wait(
        store: *mut RawStore,
        keys: *const *const c_char,
        count: usize,
        timeout_ms: i64,
    ) -> *mut c_char;
    fn gantry_store_check(
        store: *mut RawStore,
        keys: *const *const c_char,
        count: usize,
        present: *mut c_int,
    ) -> *mut c_char;
    fn gantry_group_gloo(
        store: *mut RawStore,
        rank: c_int,
        size: c_int,
        host: *const c_char,
        timeout_ms: i64,
        out: *mut *mut RawGroup,
    ) -> *mut c_char;
    fn gantry_group_nccl(
        store: *mut RawStore,
        rank: c_int,
        size: c_int,
        device: c_int,
        timeout_ms: i64,
        out: *mut *mut RawGroup,
    ) -> *mut c_char;
    fn gantry_group_free(group: *mut RawGroup);
    fn gantry_group_all_reduce_sum(group: *mut RawGroup, tensor: *const c_void) -> *mut c_char;
    fn gantry_group_broadcast(group: *mut RawGroup, tensor: *const c_void, root: c_int) -> *mut c_char;
}

/// What a C++ call into c10d threw, in its own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CppError(pub String);

impl std::fmt::Display for CppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.trim_end())
    }
}

impl std::error::Error for CppError {}

type CppResult<T> = Result<T, CppError>;

/// Takes ownership of a message returned by the shim.
fn check(message: *mut c_char) -> CppResult<()> {
    if message.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null return is a NUL-terminated string from malloc, owned by us from here.
    let text = unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned();
    // SAFETY: allocated by the shim's malloc and not used after this.
    unsafe { gantry_free(message.cast()) };
    Err(CppError(text))
}

/// A C string for the shim; text with a NUL byte is refused.
fn c_string(what: &str, text: &str) -> CppResult<CString> {
    CString::new(text).map_err(|_| CppError(format!("{what} {text:?} contains a NUL byte")))
}

/// Milliseconds for c10d, at least 1 (c10d reads 0 as "no timeout" in places).
fn millis(timeout: Duration) -> i64 {
    i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// Whether this build has the NCCL backend.
pub(crate) fn nccl_built() -> bool {
    // SAFETY: no arguments, no side effects.
    unsafe { gantry_nccl_built() != 0 }
}

/// A c10d store: a `TCPStore` or a `PrefixStore` view of one.
pub(crate) struct Store(NonNull<RawStore>);

// SAFETY: a c10d store may be used from any thread (TCPStore holds a lock around every
// request); `Store` is not `Sync`, so one thread at a time uses a handle.
unsafe impl Send for Store {}

impl Store {
    /// Opens the TCPStore at `host:port`: hosts it when `server` (port 0: any free port), else
    /// connects, retrying until `timeout`. Returns the store and the port it uses.
    pub(crate) fn open(host: &str, port: u16, server: bool, timeout: Duration) -> CppResult<(Store, u16)> {
        let host = c_string("host", host)?;
        let mut out = std::ptr::null_mut();
        let mut bound = 0u16;
        // SAFETY: valid C string and out-pointers for the duration of the call.
        check(unsafe {
            gantry_store_open(
                host.as_ptr(),
                port,
                c_int::from(server),
                millis(timeout),
                &mut out,
                &mut bound,
            )
        })?;
        Ok((Store(NonNull::new(out).expect("store handle")), bound))
    }

    /// A view of this store with every key prefixed by `prefix`.
    pub(crate) fn prefixed(&self, prefix: &str) -> CppResult<Store> {
        let prefix = c_string("store prefix", prefix)?;
        let mut out = std::ptr::null_mut();
        // SAFETY: live handle, valid C string and out-pointer.
        check(unsafe { gantry_store_prefixed(self.0.as_ptr(), prefix.as_ptr(), &mut out) })?;
        Ok(Store(NonNull::new(out).expect("store handle")))
    }

    pub(crate) fn set(&self, key: &str, value: &[u8]) -> CppResult<()> {
        let key = c_string("store key", key)?;
        // SAFETY: live handle; `value` is valid for `len` bytes during the call.
        check(unsafe { gantry_store_set(self.0.as_ptr(), key.as_ptr(), value.as_ptr(), value.len()) })
    }

    /// Waits up to `timeout` for `key`, then reads it.
    pub(crate) fn get(&self, key: &str, timeout: Duration) -> CppResult<Vec<u8>> {
        let key = c_string("store key", key)?;
        let mut value = std::ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: live handle, valid C string and out-pointers.
        check(unsafe { gantry_store_get(self.0.as_ptr(), key.as_ptr(), millis(timeout), &mut value, &mut len) })?;
        // SAFETY: on success `value` is a malloc'd buffer of `len` bytes that we now own.
        let bytes = unsafe { std::slice::from_raw_parts(value, len) }.to_vec();
        // SAFETY: allocated by the shim's malloc, not used after this.
        unsafe { gantry_free(value.cast()) };
        Ok(bytes)
    }

    /// Waits up to `timeout` until every key exists.
    pub(crate) fn wait(&self, keys: &[String], timeout: Duration) -> CppResult<()> {
        let keys = keys
            .iter()
            .map(|k| c_string("store key", k))
            .collect::<CppResult<Vec<_>>>()?;
        let pointers: Vec<*const c_char> = keys.iter().map(|k| k.as_ptr()).collect();
        // SAFETY: live handle; `pointers` holds `len` valid C strings kept alive by `keys`.
        check(unsafe { gantry_store_wait(self.0.as_ptr(), pointers.as_ptr(), pointers.len(), millis(timeout)) })
    }

    /// Whether `key` exists now.
    pub(crate) fn has(&self, key: &str) -> CppResult<bool> {
        let key = c_string("store key", key)?;
        let pointers = [key.as_ptr()];
        let mut present: c_int = 0;
        // SAFETY: live handle, one valid C string, valid out-pointer.
        check(unsafe { gantry_store_check(self.0.as_ptr(), pointers.as_ptr(), 1, &mut present) })?;
        Ok(present != 0)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: the handle came from the shim and is freed once.
        unsafe { gantry_store_free(self.0.as_ptr()) }
    }
}

/// A c10d process group (ProcessGroupGloo or ProcessGroupNCCL).
pub(crate) struct Group(NonNull<RawGroup>);

// SAFETY: c10d's backends may be called from any thread; calls on one group are serialised by
// the `&mut self` of its owner (`ProcessGroup`), which is what c10d requires (collectives are
// issued in the same order on every rank).
unsafe impl Send for Group {}

impl Group {
    /// A Gloo group; `host` is the address this rank binds and peers dial (None: c10d's default).
    pub(crate) fn gloo(
        store: &Store,
        rank: usize,
        size: usize,
        host: Option<&str>,
        timeout: Duration,
    ) -> CppResult<Group> {
        let host = host.map(|h| c_string("host", h)).transpose()?;
        let mut out = std::ptr::null_mut();
        // SAFETY: live store handle, optional valid C string, out-pointer.
        check(unsafe {
            gantry_group_gloo(
                store.0.as_ptr(),
                to_int(rank),
                to_int(size),
                host.as_ref().map_or(std::ptr::null(), |h| h.as_ptr()),
                millis(timeout),
                &mut out,
            )
        })?;
        Ok(Group(NonNull::new(out).expect("group handle")))
    }

    /// An NCCL group on CUDA device `device`.
    pub(crate) fn nccl(store: &Store, rank: usize, size: usize, device: usize, timeout: Duration) -> CppResult<Group> {
        let mut out = std::ptr::null_mut();
        // SAFETY: live store handle and out-pointer.
        check(unsafe {
            gantry_group_nccl(
                store.0.as_ptr(),
                to_int(rank),
                to_int(size),
                to_int(device),
                millis(timeout),
                &mut out,
            )
        })?;
        Ok(Group(NonNull::new(out).expect("group handle")))
    }

    /// Sums `tensor` over the group, in place.
    pub(crate) fn all_reduce_sum(&mut self, tensor: &Tensor) -> CppResult<()> {
        // SAFETY: live handle; tch's tensor pointer is an `at::Tensor*` that outlives the call.
        check(unsafe { gantry_group_all_reduce_sum(self.0.as_ptr(), tensor.as_ptr().cast()) })
    }

    /// Copies rank `root`'s `tensor` into the others', in place.
    pub(crate) fn broadcast(&mut self, tensor: &Tensor, root: usize) -> CppResult<()> {
        // SAFETY: as in `all_reduce_sum`.
        check(unsafe { gantry_group_broadcast(self.0.as_ptr(), tensor.as_ptr().cast(), to_int(root)) })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: the handle came from the shim and is freed once.
        unsafe { gantry_group_free(self.0.as_ptr()) }
    }
}

/// Ranks and devices as C ints (callers validate ranks against the world size first).
fn to_int(value: usize) -> c_int {
    c_int::try_from(value).unwrap_or(c_int::MAX)
}
