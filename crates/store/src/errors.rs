//! One reading of ClickHouse's error codes for every store: the embedded engine and a
//! server answer with the same codes, so they must mean the same to the loader.
//!
//! - transient ("not now"): the loader waits and retries, the API answers 503;
//! - bad rows: only these make an insert `Rejected`, so its rows become dead letters;
//! - anything else refused a statement: `Rejected` for a read (the client's SQL), but
//!   for an insert the deployment's fault (a missing table, a read-only user), so the
//!   loader waits for it to be fixed rather than dead-lettering good rows.

use std::time::Duration;

use crate::StoreError;

/// Codes that mean "not now" rather than "never": timeouts, overload, memory, parts
/// piling up faster than merges, lost connections between nodes, ZooKeeper trouble,
/// read-only replicas.
const TRANSIENT: &[u32] = &[
    3,    // UNEXPECTED_END_OF_FILE
    32,   // ATTEMPT_TO_READ_AFTER_EOF (a peer closed the connection)
    173,  // CANNOT_ALLOCATE_MEMORY
    198,  // DNS_ERROR
    202,  // TOO_MANY_SIMULTANEOUS_QUERIES
    203,  // NO_FREE_CONNECTION
    209,  // SOCKET_TIMEOUT
    210,  // NETWORK_ERROR
    225,  // NO_ZOOKEEPER
    236,  // ABORTED
    241,  // MEMORY_LIMIT_EXCEEDED
    242,  // TABLE_IS_READ_ONLY (a replica without its ZooKeeper session)
    243,  // NOT_ENOUGH_SPACE
    252,  // TOO_MANY_PARTS
    279,  // ALL_CONNECTION_TRIES_FAILED
    285,  // TOO_FEW_LIVE_REPLICAS
    286,  // UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE
    319,  // UNKNOWN_STATUS_OF_INSERT
    394,  // QUERY_WAS_CANCELLED
    425,  // SYSTEM_ERROR
    999,  // KEEPER_EXCEPTION
    1000, // POCO_EXCEPTION (mostly network)
];
const TIMEOUT_EXCEEDED: u32 = 159;
const TOO_SLOW: u32 = 160;

/// Codes that say the rows themselves are bad.
const BAD_DATA: &[u32] = &[6, 26, 27, 38, 41, 53, 69, 70, 72, 117, 131, 321, 376];

/// The `Code: N` ClickHouse puts at the start of every error (`Code: N.` on new
/// versions, `Code: N,` on 18.16).
pub fn code(message: &str) -> Option<u32> {
    let at = message.find("Code: ")? + "Code: ".len();
    let digits: String = message[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// What an error message of the engine means for a statement.
pub fn classify(message: String) -> StoreError {
    match code(&message) {
        Some(TIMEOUT_EXCEEDED | TOO_SLOW) => StoreError::Timeout(Duration::ZERO),
        Some(c) if TRANSIENT.contains(&c) => StoreError::Unavailable(message),
        Some(_) => StoreError::Rejected(message),
        None => StoreError::Unavailable(message),
    }
}

/// An insert is `Rejected` only for bad rows; a time limit is just "not now".
pub fn for_insert(e: StoreError) -> StoreError {
    match e {
        StoreError::Rejected(msg) if !code(&msg).is_some_and(|c| BAD_DATA.contains(&c)) => {
            StoreError::Unavailable(msg)
        }
        StoreError::Timeout(_) => StoreError::Unavailable("insert timed out".into()),
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_classify_alike_in_both_dialects() {
        for (msg, want) in [
            (
                "Code: 62, e.displayText() = DB::Exception: Syntax error",
                "rejected",
            ),
            ("Code: 62. DB::Exception: Syntax error", "rejected"),
            (
                "Code: 279, e.displayText() = All connection tries failed",
                "unavailable",
            ),
            (
                "Code: 252. DB::Exception: Too many parts (1)",
                "unavailable",
            ),
            (
                "Code: 241. DB::Exception: Memory limit exceeded",
                "unavailable",
            ),
            ("Code: 159. DB::Exception: Timeout exceeded", "timeout"),
            ("503 Service Unavailable", "unavailable"),
        ] {
            let got = match classify(msg.into()) {
                StoreError::Rejected(_) => "rejected",
                StoreError::Unavailable(_) => "unavailable",
                StoreError::Timeout(_) => "timeout",
                StoreError::NotAllowed(_) => "not allowed",
            };
            assert_eq!(got, want, "{msg}");
        }
    }

    #[test]
    fn only_bad_rows_reject_an_insert() {
        // A missing table stalls the loader rather than dead-lettering every row.
        assert!(matches!(
            for_insert(classify(
                "Code: 60, e.displayText() = Table ugc.events doesn't exist".into()
            )),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            for_insert(classify("Code: 117. DB::Exception: Unknown field".into())),
            StoreError::Rejected(_)
        ));
    }
}
