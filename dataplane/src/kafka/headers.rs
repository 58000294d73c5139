//! The headers of a consumed record, read through librdkafka's C interface rather than rdkafka's
//! `Headers::try_get`, which unwraps each header name as UTF-8 and so panics on a name that is
//! not: any producer can write such a name, and one record would take the worker down. Here a
//! name is handed over as bytes, for the source to check like a value.
//!
//! The one `unsafe` module of the Kafka side: two calls that only read the message that the
//! borrow keeps alive.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_void};
use std::ptr;

use rdkafka::bindings as rdsys;
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaRespErr;

/// Calls `f` with each header of `message`, in order: its name (bytes up to the first NUL, as
/// librdkafka keeps it) and its value (`None` for a null value).
pub(crate) fn for_each_header(
    message: &BorrowedMessage<'_>,
    mut f: impl FnMut(&[u8], Option<&[u8]>),
) {
    let mut headers: *mut rdsys::rd_kafka_headers_t = ptr::null_mut();
    // SAFETY: `message.ptr()` is the librdkafka message that `message` borrows, alive for the
    // borrow. `rd_kafka_message_headers` only reads it and writes a pointer to the headers that
    // the message owns (not to be freed here), or returns an error and writes nothing.
    let err = unsafe { rdsys::rd_kafka_message_headers(message.ptr(), &mut headers) };
    if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
        return;
    }
    for idx in 0.. {
        let mut name: *const c_char = ptr::null();
        let mut value: *const c_void = ptr::null();
        let mut size: usize = 0;
        // SAFETY: `headers` is the message's header list, alive while the message is; the call
        // reads entry `idx` or returns an error past the last one, writing through the three
        // out-pointers, which point at the locals above.
        let err = unsafe {
            rdsys::rd_kafka_header_get_all(headers, idx, &mut name, &mut value, &mut size)
        };
        if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            break;
        }
        // SAFETY: librdkafka keeps each header name NUL-terminated, alive with the message.
        let name = unsafe { CStr::from_ptr(name) }.to_bytes();
        let value = if value.is_null() {
            None
        } else {
            // SAFETY: `value` points at `size` bytes of the header's value, alive with the
            // message (librdkafka gives a null pointer for a null value, handled above).
            Some(unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) })
        };
        f(name, value);
    }
}
