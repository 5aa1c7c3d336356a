//! Procedural macros for farcall.
use proc_macro::TokenStream;

/// Placeholder; replaced by the real attribute.
#[proc_macro_attribute]
pub fn remote(_attr: TokenStream, item: TokenStream) -> TokenStream {
    item
}
