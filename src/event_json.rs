//! The JSON text of an event, written natively when its data is plain JSON: what a store row
//! or a Redis entry holds, the same text `nova._codec` makes with the standard library's
//! `json` (compact separators, `ensure_ascii`, keys in order), byte for byte.
//!
//! Why: without orjson (an optional extra, with no free-threaded wheels) the `json` route runs
//! several `JSONEncoder.encode` calls and builds a `datetime` for every event, about 6 µs; a
//! bus with a `SqliteStore` spends most of its time there. This writer takes only events of
//! the `Event` class itself whose data is of the exact types `json` writes without choices
//! (None, bool, int, float, str, list, tuple, dict with str keys). It runs no Python code of
//! the data's own, and declines everything else (subclasses of those types or of `Event`,
//! other keys, lone surrogates, NaN where refused, very deep data): those go to `nova._codec`
//! as before, which writes them or raises its located error. Declining is never an error; it
//! only means "let json do it".

use std::fmt::Write as _;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::event::Event;

/// Deeper data is left to `nova._codec`, which tells deep data (limit 500) from cycles.
const MAX_NATIVE_DEPTH: usize = 64;

/// The writer declined: `nova._codec` is to write this event (or raise its error).
struct Decline;

type Written = Result<(), Decline>;

impl From<PyErr> for Decline {
    fn from(_: PyErr) -> Decline {
        Decline
    }
}

/// `(microseconds since the epoch, JSON text)` of `event`, as `nova._codec.encode` returns
/// them, or None when the event is for `nova._codec` to write. `allow_nan`: whether NaN and
/// the infinities are written (as `NaN`, `Infinity`, `-Infinity`) rather than declined.
#[pyfunction]
pub fn _event_json(py: Python<'_>, event: &Bound<'_, Event>, allow_nan: bool) -> Option<(i64, Py<PyString>)> {
    // A subclass may override a field's getter, which this writer would not see (it reads the
    // fields themselves): subclasses' events are for `nova._codec`, which asks the getters.
    if !event.is_exact_instance_of::<Event>() {
        return None;
    }
    let event = event.get();
    let mut out = String::with_capacity(160);
    write_event(py, event, allow_nan, &mut out).ok()?;
    Some((event.micros(), PyString::new(py, &out).unbind()))
}

fn write_event(py: Python<'_>, event: &Event, allow_nan: bool, out: &mut String) -> Written {
    if !event.timestamp_is_utc(py)? {
        return Err(Decline);
    }
    out.push_str("{\"id\":");
    match event.unmade_id(py) {
        Some(uuid) => {
            let mut buf = uuid::Uuid::encode_buffer();
            out.push('"');
            out.push_str(uuid::Uuid::from_u128(uuid).hyphenated().encode_lower(&mut buf));
            out.push('"');
        }
        None => write_str(event.id_obj(py), out)?,
    }
    out.push_str(",\"type\":");
    write_str(event.type_obj(py), out)?;
    out.push_str(",\"data\":");
    write_value(event.data_obj(py), allow_nan, 0, out)?;
    out.push_str(",\"metadata\":");
    out.push('{');
    for (i, (key, value)) in event.metadata_pairs(py).enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(key, out)?;
        out.push(':');
        write_str(value, out)?;
    }
    out.push('}');
    out.push_str(",\"timestamp\":\"");
    write_utc(event.micros(), out)?;
    out.push_str("\"}");
    Ok(())
}

fn write_value(value: &Bound<'_, PyAny>, allow_nan: bool, depth: usize, out: &mut String) -> Written {
    if value.is_none() {
        out.push_str("null");
    } else if let Ok(s) = value.downcast_exact::<PyString>() {
        write_str(s, out)?;
    } else if let Ok(b) = value.downcast_exact::<PyBool>() {
        out.push_str(if b.is_true() { "true" } else { "false" });
    } else if let Ok(i) = value.downcast_exact::<PyInt>() {
        match i.extract::<i64>() {
            Ok(n) => {
                let _ = write!(out, "{n}");
            }
            // Past 64 bits: int.__repr__, as json writes it (exact int: no code of the data's).
            Err(_) => out.push_str(i.repr()?.to_str()?),
        }
    } else if let Ok(f) = value.downcast_exact::<PyFloat>() {
        write_float(f, allow_nan, out)?;
    } else if let Ok(d) = value.downcast_exact::<PyDict>() {
        write_dict(d, allow_nan, depth + 1, out)?;
    } else if let Ok(l) = value.downcast_exact::<PyList>() {
        // GIL off: a snapshot, as for a dict (see write_dict). Declining a list another thread
        // shortened would hand it to json's C encoder, which 3.13t's can crash on.
        #[cfg(Py_GIL_DISABLED)]
        let l = &l.get_slice(0, l.len());
        write_array(l.iter(), allow_nan, depth + 1, out)?;
    } else if let Ok(t) = value.downcast_exact::<PyTuple>() {
        write_array(t.iter(), allow_nan, depth + 1, out)?;
    } else {
        return Err(Decline);
    }
    Ok(())
}

/// `[item,...]` of a list or tuple (json writes both alike).
fn write_array<'py>(
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    allow_nan: bool,
    depth: usize,
    out: &mut String,
) -> Written {
    if depth > MAX_NATIVE_DEPTH {
        return Err(Decline);
    }
    out.push('[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_value(&item, allow_nan, depth, out)?;
    }
    out.push(']');
    Ok(())
}

/// A dict of the data with str keys (any other key: declined, json converts or refuses it), in
/// order.
fn write_dict(d: &Bound<'_, PyDict>, allow_nan: bool, depth: usize, out: &mut String) -> Written {
    if depth > MAX_NATIVE_DEPTH {
        return Err(Decline);
    }
    // With the GIL, nothing changes the dict while it is written: the writer runs no Python
    // code. Without it another thread may, and iterating a dict that changes size is an error
    // (a panic in PyO3's iterator), which a critical section does not rule out (it is
    // suspended while the thread waits for another one): write a snapshot, taken atomically.
    #[cfg(Py_GIL_DISABLED)]
    let d = &d.copy()?;
    out.push('{');
    for (i, (key, value)) in d.iter().enumerate() {
        let key = key.downcast_exact::<PyString>().map_err(|_| Decline)?;
        if i > 0 {
            out.push(',');
        }
        write_str(key, out)?;
        out.push(':');
        write_value(&value, allow_nan, depth, out)?;
    }
    out.push('}');
    Ok(())
}

/// `float.__repr__` for finite values, as json writes them; NaN and the infinities as json
/// writes them when allowed, declined otherwise (json's error names the place).
fn write_float(f: &Bound<'_, PyFloat>, allow_nan: bool, out: &mut String) -> Written {
    let v = f.value();
    if v.is_finite() {
        out.push_str(f.repr()?.to_str()?);
    } else if !allow_nan {
        return Err(Decline);
    } else if v.is_nan() {
        out.push_str("NaN");
    } else {
        out.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
    }
    Ok(())
}

/// A JSON string as json's `ensure_ascii` writes it: printable ASCII as is, `"` and `\`
/// escaped, the five short escapes, everything else `\u` and four lowercase hex digits (a
/// surrogate pair past U+FFFF). A str with a lone surrogate has no UTF-8 form: declined.
fn write_str(s: &Bound<'_, PyString>, out: &mut String) -> Written {
    let text = s.to_str()?;
    out.push('"');
    let mut plain = 0;
    for (at, c) in text.char_indices() {
        if (' '..='~').contains(&c) && c != '"' && c != '\\' {
            continue;
        }
        out.push_str(&text[plain..at]);
        plain = at + c.len_utf8();
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push_str(&text[plain..]);
    out.push('"');
    Ok(())
}

/// `datetime.isoformat(timespec="microseconds")` of a UTC instant, given as microseconds
/// since the epoch: `YYYY-MM-DDTHH:MM:SS.ffffff+00:00` (datetime's years 1 to 9999 only).
fn write_utc(micros: i64, out: &mut String) -> Written {
    let (days, in_day) = (micros.div_euclid(86_400_000_000), micros.rem_euclid(86_400_000_000));
    let (year, month, day) = civil_from_days(days);
    if !(1..=9999).contains(&year) {
        return Err(Decline);
    }
    let (secs, micro) = (in_day / 1_000_000, in_day % 1_000_000);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micro:06}+00:00",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    Ok(())
}

/// (year, month, day) of the proleptic Gregorian calendar for `days` since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_event_json, m)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-719_162), (1, 1, 1));
        assert_eq!(civil_from_days(2_932_896), (9999, 12, 31));
    }

    #[test]
    fn utc_text_has_microseconds_and_offset() {
        let mut out = String::new();
        assert!(write_utc(1_714_564_800_000_001, &mut out).is_ok());
        assert_eq!(out, "2024-05-01T12:00:00.000001+00:00");
        out.clear();
        assert!(write_utc(-1, &mut out).is_ok());
        assert_eq!(out, "1969-12-31T23:59:59.999999+00:00");
    }
}
