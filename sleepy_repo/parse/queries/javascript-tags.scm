; Tags query for JavaScript (and JSX), read by sleepy_repo.parse.parser.
; Capture names are documented at the top of python-tags.scm:
;   @definition.<kind> / @name.definition.<kind> / @body, @name.reference.call,
;   @import.statement / @import.module / @import.name / @import.glob / @import.default,
;   @export.name (names exported by an `export { ... }` list, `export default x` or
;   CommonJS `exports.x = ...` / `module.exports = {...}`).

; --- definitions ---

(function_declaration
  name: (identifier) @name.definition.function
  body: (_) @body) @definition.function

(generator_function_declaration
  name: (identifier) @name.definition.function
  body: (_) @body) @definition.function

(class_declaration
  name: (identifier) @name.definition.class
  body: (class_body) @body) @definition.class

(method_definition
  name: [(property_identifier) (private_property_identifier)] @name.definition.method
  body: (_) @body) @definition.method

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

; JSX: <Component .../> counts as a call of Component (lower-case tags are HTML elements)
((jsx_opening_element name: (identifier) @name.reference.call)
 (#match? @name.reference.call "^[A-Z]"))
((jsx_self_closing_element name: (identifier) @name.reference.call)
 (#match? @name.reference.call "^[A-Z]"))

; --- imports ---

(import_statement source: (string) @import.module) @import.statement
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
