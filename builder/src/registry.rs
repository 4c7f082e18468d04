//! Registry client: resolve, pull and push through the OCI distribution API.
