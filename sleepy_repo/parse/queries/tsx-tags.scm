; Tags query for TSX (TypeScript + JSX), read by sleepy_repo.parse.parser.
; Capture names are documented at the top of python-tags.scm:
;   @definition.<kind> / @name.definition.<kind> / @body, @scope.<kind> / @name.scope.<kind>,
;   @name.reference.call, @import.statement / @import.module / @import.name / @import.glob /
;   @import.default, @export.name (names exported by `export { ... }`, `export default x`
;   or CommonJS `exports.x = ...` / `module.exports = {...}`).
; Same as typescript-tags.scm plus JSX component uses as call references.

; --- definitions ---

(function_declaration
  name: (identifier) @name.definition.function
  body: (_) @body) @definition.function

(generator_function_declaration
  name: (identifier) @name.definition.function
  body: (_) @body) @definition.function

(class_declaration
  name: (type_identifier) @name.definition.class
  body: (class_body) @body) @definition.class

(abstract_class_declaration
  name: (type_identifier) @name.definition.class
  body: (class_body) @body) @definition.class

(interface_declaration
  name: (type_identifier) @name.definition.interface
  body: (_) @body) @definition.interface

(enum_declaration
  name: (identifier) @name.definition.enum
  body: (_) @body) @definition.enum

(type_alias_declaration
  name: (type_identifier) @name.definition.type) @definition.type

(method_definition
  name: [(property_identifier) (private_property_identifier)] @name.definition.method
  body: (_) @body) @definition.method

; declared-only methods of abstract classes and interfaces
(abstract_method_signature
  name: (property_identifier) @name.definition.method) @definition.method

(interface_body
  (method_signature
    name: (property_identifier) @name.definition.method) @definition.method)

; overload signatures (`function f(a: string): number;`, and a class's `m(a: string): T;`)
; and ambient declarations (`declare function f(): void;`): each is a symbol with its own
; span, beside the implementation that shares its name
(function_signature
  name: (identifier) @name.definition.function) @definition.function

(class_body
  (method_signature
    name: [(property_identifier) (private_property_identifier)] @name.definition.method)
    @definition.method)

; `namespace N { ... }`: members are qualified as N.member
(internal_module
  name: (identifier) @name.scope.module
  body: (statement_block)) @scope.module

; top-level `const f = () => ...` / `var f = function () {...}`, exported or not
(program
  [
    (lexical_declaration
      (variable_declarator
        name: (identifier) @name.definition.function
        value: [
          (arrow_function body: (_) @body)
          (function_expression body: (_) @body)
          (generator_function body: (_) @body)
        ])) @definition.function
    (variable_declaration
      (variable_declarator
        name: (identifier) @name.definition.function
        value: [
          (arrow_function body: (_) @body)
          (function_expression body: (_) @body)
          (generator_function body: (_) @body)
        ])) @definition.function
  ])

(program
  (export_statement
    declaration: (lexical_declaration
      (variable_declarator
        name: (identifier) @name.definition.function
        value: [
          (arrow_function body: (_) @body)
          (function_expression body: (_) @body)
          (generator_function body: (_) @body)
        ])) @definition.function))

; --- references ---

(call_expression
  function: [
    (identifier) @name.reference.call
    (member_expression
      property: [(property_identifier) (private_property_identifier)] @name.reference.call)
  ])

(new_expression
  constructor: [
    (identifier) @name.reference.call
    (member_expression property: (property_identifier) @name.reference.call)
  ])

; --- imports ---

(import_statement source: (string) @import.module) @import.statement
(import_statement (import_require_clause source: (string) @import.module)) @import.statement
(import_specifier name: (_) @import.name)
(import_clause (identifier) @import.default)
(import_clause (namespace_import) @import.glob)

(export_statement source: (string) @import.module) @import.statement
(export_statement "*" @import.glob source: (string))
(export_statement (namespace_export) @import.glob)
(export_statement
  (export_clause (export_specifier name: (_) @import.name))
  source: (string))

; require("./x") and import("./x")
((call_expression
   function: (identifier) @_require
   arguments: (arguments . (string) @import.module .)) @import.statement
 (#eq? @_require "require"))

(call_expression
  function: (import)
  arguments: (arguments . (string) @import.module)) @import.statement

; --- export lists ---

(export_statement
  !source
  (export_clause (export_specifier name: (identifier) @export.name)))

(export_statement value: (identifier) @export.name)

; JSX: <Component .../> counts as a call of Component
; (lower-case tags are HTML elements, not components)
((jsx_opening_element name: (identifier) @name.reference.call)
 (#match? @name.reference.call "^[A-Z]"))
((jsx_self_closing_element name: (identifier) @name.reference.call)
 (#match? @name.reference.call "^[A-Z]"))

; CommonJS: exports.a = ..., module.exports.a = ..., module.exports = a / { a, b: c }
((assignment_expression
   left: (member_expression
     object: (identifier) @_exports
     property: (property_identifier) @export.name))
 (#eq? @_exports "exports"))

((assignment_expression
   left: (member_expression
     object: (member_expression
       object: (identifier) @_module
       property: (property_identifier) @_exports)
     property: (property_identifier) @export.name))
 (#eq? @_module "module")
 (#eq? @_exports "exports"))

((assignment_expression
   left: (member_expression
     object: (identifier) @_module
     property: (property_identifier) @_exports)
   right: [
     (identifier) @export.name
     (object [
       (shorthand_property_identifier) @export.name
       (pair value: (identifier) @export.name)
     ])
   ])
 (#eq? @_module "module")
 (#eq? @_exports "exports"))
