//! Raw WIT bindings, private to the SDK.

wit_bindgen::generate!({
    path: "../wit/toolhost-workflow@0.1.0",
    world: "workflow",
    pub_export_macro: true,
    default_bindings_module: "toolhost_sdk::bindings",
});
