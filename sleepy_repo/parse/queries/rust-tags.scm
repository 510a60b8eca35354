; Tags query for Rust, read by sleepy_repo.parse.parser.
; Capture names are documented at the top of python-tags.scm:
;   @definition.<kind> / @name.definition.<kind> / @body, @scope.<kind> / @name.scope.<kind>
;   (impl blocks and inline modules), @name.reference.call, @import.statement /
;   @import.module / @import.name / @import.glob / @import.submodule.
; `use a::b::{c, d::E}` nests: a `use` list inside another one is its own statement whose
; module is prefixed with the enclosing one's ("a::b" + "::" + "d").

; --- definitions ---

(function_item
  name: (identifier) @name.definition.function
  body: (block) @body) @definition.function

(declaration_list
  (function_signature_item
    name: (identifier) @name.definition.function) @definition.function)

(struct_item
  name: (type_identifier) @name.definition.struct
  body: (_)? @body) @definition.struct

(union_item
  name: (type_identifier) @name.definition.struct
  body: (_) @body) @definition.struct

(enum_item
  name: (type_identifier) @name.definition.enum
  body: (_) @body) @definition.enum

(trait_item
  name: (type_identifier) @name.definition.trait
  body: (_) @body) @definition.trait

(type_item
  name: (type_identifier) @name.definition.type) @definition.type

; impl blocks: their functions become methods of the implemented type
(impl_item
  !trait
  type: [
    (type_identifier) @name.scope.impl
    (generic_type type: (type_identifier) @name.scope.impl)
    (scoped_type_identifier name: (type_identifier) @name.scope.impl)
    (generic_type type: (scoped_type_identifier name: (type_identifier) @name.scope.impl))
  ]) @scope.impl

(impl_item
  trait: (_)
  type: [
    (type_identifier) @name.scope.trait_impl
    (generic_type type: (type_identifier) @name.scope.trait_impl)
    (scoped_type_identifier name: (type_identifier) @name.scope.trait_impl)
    (generic_type type: (scoped_type_identifier name: (type_identifier) @name.scope.trait_impl))
  ]) @scope.trait_impl

; inline `mod tests { ... }`: members are qualified as tests.member
(mod_item
  name: (identifier) @name.scope.module
  body: (declaration_list)) @scope.module

; --- references ---

(call_expression
  function: [
    (identifier) @name.reference.call
    (scoped_identifier name: (identifier) @name.reference.call)
    (field_expression field: (field_identifier) @name.reference.call)
    (generic_function
      function: [
        (identifier) @name.reference.call
        (scoped_identifier name: (identifier) @name.reference.call)
        (field_expression field: (field_identifier) @name.reference.call)
      ])
  ])

; --- imports ---

; use foo; use foo as bar;
(use_declaration
  argument: [(identifier) (crate) (self) (super)] @import.module) @import.statement
(use_declaration
  argument: (use_as_clause path: [(identifier) (crate) (self) (super)] @import.module)) @import.statement

; use a::b::c; use a::b::c as d;
(use_declaration
  argument: (scoped_identifier path: (_) @import.module name: (_) @import.name)) @import.statement
(use_declaration
  argument: (use_as_clause
    path: (scoped_identifier path: (_) @import.module name: (_) @import.name))) @import.statement

; use a::b::*;
(use_declaration
  argument: (use_wildcard (_) @import.module) @import.glob) @import.statement

; use a::{b, c::D, e as f, g::*, h::{i, j}};
(scoped_use_list path: (_) @import.module list: (use_list)) @import.statement
(use_list [(identifier) (self) (scoped_identifier) (use_wildcard)] @import.name)
(use_list (use_as_clause path: (_) @import.name))

; mod x;
(mod_item !body name: (identifier) @import.submodule) @import.statement
