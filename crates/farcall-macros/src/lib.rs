//! Procedural macros for farcall: the `#[farcall::remote]` attribute.
//!
//! The generated code names everything through `::farcall::...` paths, so
//! the attribute works in any crate that depends on `farcall` (and not
//! inside `farcall` itself, which has no `::farcall` in scope).

use std::collections::HashSet;

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::{
    parse_macro_input, Attribute, Fields, FnArg, Ident, ImplItem, ImplItemFn, Item, ItemImpl,
    ItemStruct, LitStr, Pat, PatType, ReturnType, Type, Visibility,
};

/// Makes a struct's public fields, or an inherent impl block's public
/// methods, reachable by farcall peers.
///
/// On a struct it implements `farcall::RemoteFields`: every `pub` named
/// field becomes an attribute that peers can read (the field type must be
/// `Clone + Into<Value>`) and write (`FromValue`). On an impl block it
/// implements `farcall::Remote`: every `pub fn` taking `&self` or
/// `&mut self` becomes a method peers can call with positional or keyword
/// arguments. Put it on both to host the type with `farcall::object`.
///
/// See the crate-level example of `farcall` (a tested doctest there, since
/// this crate cannot depend on the one its expansion refers to).
///
/// Helper attributes, on methods and fields: `#[farcall(skip)]` hides the
/// item from peers; `#[farcall(name = "other")]` exposes it under another
/// name. A method returning `Result<T, E>` (written with a path ending in
/// `Result`) raises `E` remotely, which must convert into `farcall::Error`.
/// Parameters must be plain identifiers of owned, non-generic types.
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr = TokenStream2::from(attr);
    let item = parse_macro_input!(item as Item);
    expand(attr, item).into()
}

/// The expansion: the item (helper attributes stripped) followed by the
/// generated impl, or by the errors that prevented generating it.
fn expand(attr: TokenStream2, item: Item) -> TokenStream2 {
    let mut errors = Errors::default();
    if !attr.is_empty() {
        errors.push(syn::Error::new_spanned(
            attr,
            "#[farcall::remote] takes no arguments",
        ));
    }
    let (item, generated) = match item {
        Item::Struct(s) => expand_struct(s, &mut errors),
        Item::Impl(i) => expand_impl(i, &mut errors),
        other => {
            errors.push(syn::Error::new_spanned(
                &other,
                "#[farcall::remote] applies to a struct or to an inherent impl block",
            ));
            (other.into_token_stream(), TokenStream2::new())
        }
    };
    match errors.0 {
        // The item is still emitted so that a mistake in the attribute's
        // input does not cascade into "cannot find type" errors elsewhere.
        Some(err) => {
            let err = err.to_compile_error();
            quote! { #item #err }
        }
        None => quote! { #item #generated },
    }
}

/// Several errors reported at once, so one build shows every mistake.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, err: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(err),
            None => self.0 = Some(err),
        }
    }

    /// The value of `result`, recording its error if it has one.
    fn ok<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|e| self.push(e)).ok()
    }
}

/// What `#[farcall(...)]` says about a field or method.
#[derive(Default)]
struct Options {
    skip: bool,
    name: Option<LitStr>,
}

/// Removes the `#[farcall(...)]` helper attributes from `attrs` (the
/// compiler does not know them) and parses them.
fn take_options(attrs: &mut Vec<Attribute>) -> syn::Result<Options> {
    let (ours, others) = attrs
        .drain(..)
        .partition::<Vec<_>, _>(|a| a.path().is_ident("farcall"));
    *attrs = others;
    let mut options = Options::default();
    for attr in ours {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("skip") {
                options.skip = true;
                Ok(())
            } else if meta.path.is_ident("name") {
                options.name = Some(meta.value()?.parse()?);
                Ok(())
            } else {
                Err(meta.error("unknown farcall option; expected `skip` or `name = \"...\"`"))
            }
        })?;
    }
    Ok(options)
}

/// The `#[cfg(...)]` attributes of an item, copied onto the generated code
/// that refers to it so that it disappears together with the item.
fn cfg_attrs(attrs: &[Attribute]) -> Vec<Attribute> {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg"))
        .cloned()
        .collect()
}

/// The name a peer uses: the explicit `name = "..."` or the Rust name.
fn remote_name(options: &Options, ident: &Ident) -> LitStr {
    options
        .name
        .clone()
        .unwrap_or_else(|| LitStr::new(&ident.unraw().to_string(), ident.span()))
}

// ---- structs: RemoteFields --------------------------------------------

/// A public field exposed as a remote attribute.
struct RemoteField {
    name: LitStr,
    ident: Ident,
    ty: Type,
    cfgs: Vec<Attribute>,
}

fn expand_struct(mut item: ItemStruct, errors: &mut Errors) -> (TokenStream2, TokenStream2) {
    let fields = remote_fields(&mut item, errors);
    let generated = fields_impl(&item, &fields);
    (item.into_token_stream(), generated)
}

/// The public named fields of `item`, helper attributes stripped.
fn remote_fields(item: &mut ItemStruct, errors: &mut Errors) -> Vec<RemoteField> {
    let mut fields = Vec::new();
    let named = matches!(item.fields, Fields::Named(_));
    for field in item.fields.iter_mut() {
        let Some(options) = errors.ok(take_options(&mut field.attrs)) else {
            continue;
        };
        if options.skip || !matches!(field.vis, Visibility::Public(_)) {
            continue;
        }
        let Some(ident) = field.ident.clone().filter(|_| named) else {
            // A public tuple field would be silently unreachable: say so.
            errors.push(syn::Error::new_spanned(
                &field.vis,
                "#[farcall::remote] exposes named fields only; \
                 make this field private or mark it #[farcall(skip)]",
            ));
            continue;
        };
        fields.push(RemoteField {
            name: remote_name(&options, &ident),
            ident,
            ty: field.ty.clone(),
            cfgs: cfg_attrs(&field.attrs),
        });
    }
    fields
}

fn fields_impl(item: &ItemStruct, fields: &[RemoteField]) -> TokenStream2 {
    let ident = &item.ident;
    let (impl_generics, ty_generics, where_clause) = item.generics.split_for_impl();
    let get_arms = fields.iter().map(|f| {
        let RemoteField {
            name,
            ident,
            ty,
            cfgs,
        } = f;
        // Spanned on the type so a missing `Clone` / `Into<Value>` points
        // at the field.
        let read = quote_spanned! {ty.span()=>
            ::farcall::Value::from(::core::clone::Clone::clone(&self.#ident))
        };
        quote! { #(#cfgs)* #name => ::core::option::Option::Some(#read), }
    });
    let set_arms = fields.iter().map(|f| {
        let RemoteField {
            name,
            ident,
            ty,
            cfgs,
        } = f;
        let convert = quote_spanned! {ty.span()=>
            <#ty as ::farcall::FromValue>::from_value(__farcall_value)?
        };
        quote! {
            #(#cfgs)* #name => {
                self.#ident = #convert;
                ::core::result::Result::Ok(true)
            }
        }
    });
    quote! {
        // `Value::from` is the identity for a `Value` field.
        #[allow(clippy::useless_conversion)]
        impl #impl_generics ::farcall::RemoteFields for #ident #ty_generics #where_clause {
            fn get_field(&self, __farcall_name: &str) -> ::core::option::Option<::farcall::Value> {
                match __farcall_name {
                    #(#get_arms)*
                    _ => ::core::option::Option::None,
                }
            }

            fn set_field(
                &mut self,
                __farcall_name: &str,
                __farcall_value: ::farcall::Value,
            ) -> ::farcall::Result<bool> {
                match __farcall_name {
                    #(#set_arms)*
                    _ => ::core::result::Result::Ok(false),
                }
            }
        }
    }
}

// ---- impl blocks: Remote ----------------------------------------------

/// A method exposed to peers.
struct RemoteMethod {
    name: LitStr,
    ident: Ident,
    params: Vec<(LitStr, Type)>,
    output: ReturnType,
    cfgs: Vec<Attribute>,
}

fn expand_impl(mut item: ItemImpl, errors: &mut Errors) -> (TokenStream2, TokenStream2) {
    let type_name = errors.ok(check_impl(&item));
    let methods = remote_methods(&mut item, errors);
    let generated = match type_name {
        Some(type_name) => remote_impl(&item, &type_name, &methods),
        None => TokenStream2::new(),
    };
    (item.into_token_stream(), generated)
}

/// Checks that `item` is an inherent, non-generic impl block and returns
/// the type's name as peers see it.
fn check_impl(item: &ItemImpl) -> syn::Result<LitStr> {
    if let Some((_, path, _)) = &item.trait_ {
        return Err(syn::Error::new_spanned(
            path,
            "#[farcall::remote] goes on an inherent impl block (`impl Type { ... }`), \
             not on a trait impl",
        ));
    }
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &item.generics,
            "#[farcall::remote] does not support generic impl blocks; \
             write the impl for a concrete type",
        ));
    }
    match &*item.self_ty {
        Type::Path(p) if p.qself.is_none() => {
            let last = p.path.segments.last().expect("a path has a segment");
            Ok(LitStr::new(
                &last.ident.unraw().to_string(),
                last.ident.span(),
            ))
        }
        other => Err(syn::Error::new_spanned(
            other,
            "#[farcall::remote] needs an impl for a named type",
        )),
    }
}

/// The remotely callable methods of `item`, helper attributes stripped
/// from every method.
fn remote_methods(item: &mut ItemImpl, errors: &mut Errors) -> Vec<RemoteMethod> {
    let mut methods = Vec::new();
    let mut seen = HashSet::new();
    for f in item.items.iter_mut().filter_map(|i| match i {
        ImplItem::Fn(f) => Some(f),
        _ => None,
    }) {
        let Some(Some(method)) = errors.ok(remote_method(f)) else {
            continue;
        };
        // Methods under `cfg` may legitimately share a name.
        if method.cfgs.is_empty() && !seen.insert(method.name.value()) {
            errors.push(syn::Error::new_spanned(
                &method.name,
                format!("two remote methods are named '{}'", method.name.value()),
            ));
        }
        methods.push(method);
    }
    methods
}

/// `Some` when `f` is remotely callable (public, `&self` or `&mut self`,
/// not skipped); an error when it should be but its signature cannot be
/// dispatched.
fn remote_method(f: &mut ImplItemFn) -> syn::Result<Option<RemoteMethod>> {
    let options = take_options(&mut f.attrs)?;
    let by_reference = f
        .sig
        .receiver()
        .is_some_and(|r| matches!(*r.ty, Type::Reference(_)));
    let public = matches!(f.vis, Visibility::Public(_));
    if options.skip || !public || !by_reference {
        if let Some(name) = options.name.filter(|_| !options.skip) {
            return Err(syn::Error::new_spanned(
                name,
                "this method is not remotely callable (it must be `pub` and take \
                 `&self` or `&mut self`), so it cannot be renamed",
            ));
        }
        return Ok(None);
    }
    check_signature(f)?;
    let params = f
        .sig
        .inputs
        .iter()
        .filter_map(|arg| match arg {
            FnArg::Typed(pt) => Some(param(pt)),
            FnArg::Receiver(_) => None,
        })
        .collect::<syn::Result<_>>()?;
    Ok(Some(RemoteMethod {
        name: remote_name(&options, &f.sig.ident),
        ident: f.sig.ident.clone(),
        params,
        output: f.sig.output.clone(),
        cfgs: cfg_attrs(&f.attrs),
    }))
}

/// Rejects what a synchronous, type-erased call cannot do.
fn check_signature(f: &ImplItemFn) -> syn::Result<()> {
    let sig = &f.sig;
    if let Some(token) = &sig.asyncness {
        return Err(syn::Error::new_spanned(
            token,
            "#[farcall::remote] cannot call async methods; mark it #[farcall(skip)]",
        ));
    }
    if let Some(token) = &sig.unsafety {
        return Err(syn::Error::new_spanned(
            token,
            "#[farcall::remote] cannot call unsafe methods; mark it #[farcall(skip)]",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "#[farcall::remote] does not support generic methods (type or lifetime \
             parameters); use concrete, owned types or mark it #[farcall(skip)]",
        ));
    }
    Ok(())
}

/// A parameter's name as a keyword and its type.
fn param(pt: &PatType) -> syn::Result<(LitStr, Type)> {
    let ident = match &*pt.pat {
        Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => &p.ident,
        other => {
            return Err(syn::Error::new_spanned(
                other,
                "#[farcall::remote] needs a plain identifier for each parameter \
                 (`name: Type`), because peers may pass it by keyword",
            ))
        }
    };
    let mut borrowed = OwnedTypeCheck::default();
    borrowed.visit_type(&pt.ty);
    if let Some(err) = borrowed.0 {
        return Err(err);
    }
    let name = LitStr::new(&ident.unraw().to_string(), ident.span());
    Ok((name, (*pt.ty).clone()))
}

/// Finds what an argument decoded from a `Value` cannot be: borrowed or
/// opaque. Keeps the first problem only; one is enough to fix.
#[derive(Default)]
struct OwnedTypeCheck(Option<syn::Error>);

impl OwnedTypeCheck {
    fn found(&mut self, tokens: impl ToTokens, message: &str) {
        if self.0.is_none() {
            self.0 = Some(syn::Error::new_spanned(tokens, message));
        }
    }
}

impl<'ast> Visit<'ast> for OwnedTypeCheck {
    fn visit_type_reference(&mut self, r: &'ast syn::TypeReference) {
        let is_str = matches!(&*r.elem, Type::Path(p) if p.path.is_ident("str"));
        let message = if is_str {
            "remote method parameters must own their data: take `String` instead of `&str`"
        } else {
            "remote method parameters must own their data: take an owned type \
             (`String` for `&str`, `Vec<T>` for `&[T]`, `T` for `&T`)"
        };
        self.found(r, message);
    }

    fn visit_lifetime(&mut self, l: &'ast syn::Lifetime) {
        self.found(
            l,
            "remote method parameters cannot borrow: use owned types without lifetimes \
             (e.g. `String` instead of `&str`)",
        );
    }

    fn visit_type_impl_trait(&mut self, t: &'ast syn::TypeImplTrait) {
        self.found(
            t,
            "#[farcall::remote] does not support `impl Trait` parameters; use a concrete type",
        );
    }
}

fn remote_impl(item: &ItemImpl, type_name: &LitStr, methods: &[RemoteMethod]) -> TokenStream2 {
    let self_ty = &item.self_ty;
    let call_arms = methods.iter().map(call_arm);
    let has_arms = methods.iter().map(|m| {
        let (cfgs, name) = (&m.cfgs, &m.name);
        quote! { #(#cfgs)* #name => true, }
    });
    quote! {
        // The conversions of results are the identity for methods that
        // return `Value` or `farcall::Result<_>`.
        #[allow(clippy::useless_conversion)]
        impl ::farcall::Remote for #self_ty {
            const TYPE_NAME: &'static str = #type_name;

            fn remote_call(
                &mut self,
                __farcall_name: &str,
                __farcall_pos: ::std::vec::Vec<::farcall::Value>,
                __farcall_kw: ::farcall::Kwargs,
            ) -> ::farcall::Result<::farcall::Value> {
                match __farcall_name {
                    #(#call_arms)*
                    _ => ::core::result::Result::Err(::farcall::Error::attribute_error(
                        ::std::format!(
                            "'{}' object has no attribute '{}'",
                            #type_name,
                            __farcall_name,
                        ),
                    )),
                }
            }

            fn remote_has_method(__farcall_name: &str) -> bool {
                match __farcall_name {
                    #(#has_arms)*
                    _ => false,
                }
            }
        }
    }
}

/// The `match` arm that decodes the arguments of one method, calls it and
/// encodes its result.
fn call_arm(m: &RemoteMethod) -> TokenStream2 {
    let RemoteMethod {
        name,
        ident,
        params,
        output,
        cfgs,
    } = m;
    let vars: Vec<Ident> = (0..params.len())
        .map(|i| format_ident!("__farcall_arg{}", i))
        .collect();
    let decode = params.iter().zip(&vars).map(|((pname, ty), var)| {
        // Spanned on the type so a type without `FromValue` is reported at
        // the parameter.
        quote_spanned! {ty.span()=>
            let #var = __farcall_args.next::<#ty>(#pname)?;
        }
    });
    // `mut` only when used, so a method without parameters expands
    // without an `unused_mut` warning.
    let mutability = (!params.is_empty()).then(|| quote!(mut));
    let result = encode_result(output, quote! { Self::#ident(self, #(#vars),*) });
    quote! {
        #(#cfgs)* #name => {
            let #mutability __farcall_args =
                ::farcall::Args::new(#name, __farcall_pos, __farcall_kw);
            #(#decode)*
            __farcall_args.finish()?;
            #result
        }
    }
}

/// Turns the method's return value into `farcall::Result<Value>`.
fn encode_result(output: &ReturnType, call: TokenStream2) -> TokenStream2 {
    match output {
        ReturnType::Default => quote! {
            #call;
            ::core::result::Result::Ok(::farcall::Value::None)
        },
        ReturnType::Type(_, ty) if is_result(ty) => quote_spanned! {ty.span()=>
            #call
                .map(::farcall::Value::from)
                .map_err(::core::convert::Into::<::farcall::Error>::into)
        },
        ReturnType::Type(_, ty) => quote_spanned! {ty.span()=>
            ::core::result::Result::Ok(::farcall::Value::from(#call))
        },
    }
}

/// True when `ty` is written as a path ending in `Result` (`Result<T, E>`,
/// `farcall::Result<T>`, `io::Result<T>`): its error is raised remotely.
fn is_result(ty: &Type) -> bool {
    match ty {
        Type::Group(g) => is_result(&g.elem),
        Type::Paren(p) => is_result(&p.elem),
        Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Result"),
        _ => false,
    }
}
