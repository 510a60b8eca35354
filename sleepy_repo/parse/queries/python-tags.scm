; Tags query for Python, read by sleepy_repo.parse.parser (one generic loop for all languages).
;
; Capture names (shared by every *-tags.scm file):
;   @definition.<kind>        whole definition node (span; docs and `export` are looked up around it)
;   @name.definition.<kind>   its name; kind: function class method struct interface enum trait type
;   @body                     (optional) the definition's body: the signature is the text before it
;   @receiver                 (optional) explicit owner type of a method (Go receivers)
;   @doc                      (optional) a docstring node (Python); other languages' docs are
;                               the comment block above the definition, found by the parser
;   @scope.<kind>             a nesting scope that is not a symbol itself (Rust impl blocks,
;   @name.scope.<kind>          inline modules); members get its name as qualname prefix
;   @name.reference.call      the called name at a call site (last identifier of a.b.c())
;   @import.statement         one import; the modules and names inside it belong to it
;   @import.module            module spec as written (quotes are stripped)
;   @import.name              an imported name
;   @import.glob              a wildcard import ("*")
;   @import.default           a default import (JS/TS, recorded as "default")
;   @import.submodule         a child module declaration (Rust `mod x;`, recorded as "self::x")
;   @export.name              a name made public by an export list (JS/TS `export { a }`)
; A function whose nearest enclosing definition is a class-like one becomes a method.

(class_definition
  name: (identifier) @name.definition.class
  body: (block . (expression_statement . (string) @doc .)?) @body) @definition.class

(function_definition
  name: (identifier) @name.definition.function
  body: (block . (expression_statement . (string) @doc .)?) @body) @definition.function

(call
  function: [
    (identifier) @name.reference.call
    (attribute attribute: (identifier) @name.reference.call)
  ])

; import a.b, c as d
(import_statement
  name: [
    (dotted_name) @import.module
    (aliased_import name: (dotted_name) @import.module)
  ]) @import.statement

; from .x import y, (z as w), *
(import_from_statement
  module_name: (_) @import.module) @import.statement

(import_from_statement
  name: [
    (dotted_name) @import.name
    (aliased_import name: (dotted_name) @import.name)
  ])

(import_from_statement
  (wildcard_import) @import.glob)
