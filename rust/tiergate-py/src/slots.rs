//! Reads of a `__slots__` class's attributes straight from their slots.
//!
//! Why `unsafe` here (measured): a request's log line and metrics read about 46
//! attributes of its `RequestRecord` and `AttemptRecord`s, and each `getattr` goes
//! through the type's attribute lookup and the member descriptor: about 7.8k of the 24k
//! instructions `request_log_lines` spends on a record. A slot lives at a fixed offset
//! in every instance of its type, so once the offsets are known a read is a load.
//!
//! A type's offsets are taken from its member descriptors, found along its MRO as
//! `getattr` finds them, and used only for instances of exactly that type while its
//! version tag is unchanged. `CPython` gives a type a new tag whenever it or a base is
//! modified, and never gives one tag to two types, so a changed class, a subclass
//! (which may override a slot with a property) or another type read at the same address
//! all miss, and the caller falls back to `getattr`. So do types whose attribute access
//! is not the generic one, names that are not plain object slots, instances with an
//! unset slot (`getattr` then raises the `AttributeError`), and an interpreter running
//! without the GIL.
#![allow(unsafe_code)]

use std::cell::Cell;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple, PyType};

/// The offsets of `N` named slots in instances of one type, or `None`: that type is
/// read with `getattr`.
#[derive(Clone, Copy)]
struct Layout<const N: usize> {
    ty: usize,
    version: u32,
    offsets: Option<[isize; N]>,
}

/// One call site's layout (a `thread_local`; the GIL serialises the rest).
pub struct Cache<const N: usize>(Cell<Option<Layout<N>>>);

impl<const N: usize> Cache<N> {
    pub const fn new() -> Self {
        Self(Cell::new(None))
    }
}

/// The attributes `names` of `obj` read from its slots, or `None` when they cannot be
/// (the caller then uses `getattr`, which also raises the right error).
pub fn read<'py, const N: usize>(
    cache: &Cache<N>,
    obj: &Bound<'py, PyAny>,
    names: impl FnOnce() -> [Bound<'py, PyString>; N],
) -> Option<[Bound<'py, PyAny>; N]> {
    let ty = obj.get_type();
    let version = version_tag(&ty);
    let layout = match cache.0.get() {
        Some(l) if l.ty == ty.as_ptr() as usize && l.version == version && version != 0 => l,
        _ => {
            let l = Layout {
                ty: ty.as_ptr() as usize,
                version,
                offsets: if version == 0 {
                    None
                } else {
                    offsets(&ty, &names())
                },
            };
            cache.0.set(Some(l));
            l
        }
    };
    let offsets = layout.offsets?;
    let base = obj.as_ptr().cast::<*mut ffi::PyObject>();
    // SAFETY: `obj` is alive (borrowed for this call) and its type is exactly the type
    // whose member descriptors gave these offsets, unchanged since (same version tag):
    // each offset is that of a `PyObject *` slot inside the instance.
    let ptrs = offsets.map(|off| unsafe { base.byte_offset(off).read() });
    if ptrs.iter().any(|p| p.is_null()) {
        return None; // an unset slot: `getattr` raises its AttributeError
    }
    // SAFETY: each pointer is a live object held by `obj`'s slot; a new reference is
    // taken at once, under the GIL, as `getattr` would return.
    Some(ptrs.map(|p| unsafe { Bound::from_borrowed_ptr(obj.py(), p) }))
}

fn version_tag(ty: &Bound<'_, PyType>) -> u32 {
    // SAFETY: a type object's header, read under the GIL.
    unsafe { (*ty.as_type_ptr()).tp_version_tag }
}

/// The slot offsets of `names` in instances of `ty`, when every name is a plain object
/// slot that generic attribute access would read.
fn offsets<const N: usize>(
    ty: &Bound<'_, PyType>,
    names: &[Bound<'_, PyString>; N],
) -> Option<[isize; N]> {
    // SAFETY: reading a function pointer of a type object under the GIL.
    let getattro = unsafe { (*ty.as_type_ptr()).tp_getattro };
    // One function exported by libpython: its address is unique.
    let generic: ffi::getattrofunc = ffi::PyObject_GenericGetAttr;
    if !getattro.is_some_and(|f| std::ptr::fn_addr_eq(f, generic)) {
        return None;
    }
    // Without the GIL (a free-threaded build running so) another thread may write a
    // slot while it is read: getattr's reference counting is the safe way then.
    if let Ok(gil_enabled) = ty
        .py()
        .import("sys")
        .and_then(|s| s.getattr("_is_gil_enabled"))
    {
        if !gil_enabled.call0().ok()?.is_truthy().ok()? {
            return None;
        }
    }
    let mro = ty.getattr("__mro__").ok()?;
    let mro = mro.cast::<PyTuple>().ok()?;
    let mut out = [0isize; N];
    for (slot, name) in out.iter_mut().zip(names) {
        let descr = mro.iter().find_map(|cls| {
            let dict = cls.getattr("__dict__").ok()?;
            // A mappingproxy: look up through the mapping protocol.
            dict.get_item(name).ok()
        })?;
        *slot = member_offset(&descr)?;
    }
    Some(out)
}

/// The offset a member descriptor reads, if it is one for a `PyObject *` slot.
fn member_offset(descr: &Bound<'_, PyAny>) -> Option<isize> {
    // SAFETY: comparing a type pointer with the address of `CPython`'s member
    // descriptor type; then, for exactly that type, reading its C struct.
    unsafe {
        if ffi::Py_TYPE(descr.as_ptr()) != &raw mut ffi::PyMemberDescr_Type {
            return None;
        }
        let member = (*descr.as_ptr().cast::<ffi::PyMemberDescrObject>()).d_member;
        if member.is_null() || (*member).type_code != ffi::Py_T_OBJECT_EX {
            return None;
        }
        Some((*member).offset)
    }
}
