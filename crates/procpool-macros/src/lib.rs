//! The `#[procpool::task]` attribute. Use it through the `procpool` crate, which re-exports it;
//! the code it generates names paths in `procpool`.

use proc_macro::TokenStream;
use quote::{format_ident, quote};
use syn::{FnArg, ItemFn, ReturnType, parse_macro_input, spanned::Spanned};

/// The most arguments a task may take; the `Task` trait is implemented up to this arity.
const MAX_ARGS: usize = 6;

/// Registers a plain function as a task that pool workers can run by name.
///
/// The function is left as it was and stays callable as a normal function. Beside it the
/// attribute adds an entry to procpool's link-time task registry under the name
/// `module::path::function`, which is what crosses the wire to a worker.
///
/// The function must be a free `fn` with zero to six arguments, no generics, not `async`,
/// whose argument types are `serde::de::DeserializeOwned` and whose result is
/// `serde::Serialize`.
///
/// # Examples
///
/// ```
/// #[procpool::task]
/// fn add(a: u64, b: u64) -> u64 {
///     a + b
/// }
///
/// assert_eq!(add(2, 3), 5); // still a plain function
/// ```
///
/// A generic function is refused, since one name must stand for one function:
///
/// ```compile_fail
/// #[procpool::task]
/// fn identity<T>(x: T) -> T {
///     x
/// }
/// ```
///
/// So is a function of more than six arguments (a six-argument task is among the integration
/// tests):
///
/// ```compile_fail
/// #[procpool::task]
/// fn seven(a: u8, b: u8, c: u8, d: u8, e: u8, f: u8, g: u8) {}
/// ```
///
/// And an argument that serde cannot decode into an owned value:
///
/// ```compile_fail
/// #[procpool::task]
/// fn borrowed(name: &str) -> usize {
///     name.len()
/// }
/// ```
///
/// A function in an `impl` block is refused, with one error (a task is named by its path,
/// which a method's is not):
///
/// ```compile_fail
/// struct Resizer;
/// impl Resizer {
///     #[procpool::task]
///     fn resize(width: u32) -> u32 {
///         width / 2
///     }
/// }
/// ```
///
/// Its owned twin compiles:
///
/// ```
/// #[procpool::task]
/// fn owned(name: String) -> usize {
///     name.len()
/// }
/// ```
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    let function = parse_macro_input!(item as ItemFn);
    match expand(attr.into(), &function) {
        Ok(tokens) => tokens.into(),
        Err(error) => {
            let error = error.to_compile_error();
            quote!(#function #error).into()
        }
    }
}

fn expand(
    attr: proc_macro2::TokenStream,
    function: &ItemFn,
) -> syn::Result<proc_macro2::TokenStream> {
    if !attr.is_empty() {
        return Err(syn::Error::new(
            attr.span(),
            "#[procpool::task] takes no arguments",
        ));
    }
    let sig = &function.sig;
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "a task cannot be generic: its name must stand for one function",
        ));
    }
    if let Some(asyncness) = sig.asyncness {
        return Err(syn::Error::new(
            asyncness.span(),
            "a task cannot be `async`",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new(
            variadic.span(),
            "a task cannot be variadic",
        ));
    }
    if sig.inputs.len() > MAX_ARGS {
        return Err(syn::Error::new(
            sig.inputs.span(),
            format!(
                "a task takes at most {MAX_ARGS} arguments, found {}",
                sig.inputs.len()
            ),
        ));
    }
    let mut types = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Typed(arg) => types.push(&arg.ty),
            FnArg::Receiver(receiver) => {
                return Err(syn::Error::new(
                    receiver.span(),
                    "a task must be a free function, not a method",
                ));
            }
        }
    }
    let output = match &sig.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, ty) => quote!(#ty),
    };
    let ident = &sig.ident;
    let entry = format_ident!("__PROCPOOL_TASK_{}", ident);
    // The entry sits in a named `const` block: at module level (or in a function body) that
    // is an ordinary item, and in an `impl` block, where a task cannot be, it is an
    // associated const whose one error names the function (its path is `Self::` there),
    // instead of one error for each part of the entry.
    Ok(quote! {
        #function

        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        const #entry: () = {
            #[::procpool::__private::linkme::distributed_slice(::procpool::__private::TASKS)]
            #[linkme(crate = ::procpool::__private::linkme)]
            static ENTRY: ::procpool::__private::TaskEntry = ::procpool::__private::TaskEntry {
                name: ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#ident)),
                type_name: || ::procpool::__private::type_name_of(&#ident),
                call: |calls| {
                    ::procpool::__private::invoke::<_, (#(#types,)*), #output>(#ident, calls)
                },
            };
        };
    })
}
