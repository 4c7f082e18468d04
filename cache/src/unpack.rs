//! Safe, entry-by-entry layer unpacking into a snapshot.
