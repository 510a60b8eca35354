;;; sleepy-repo.el --- Repository notes via eglot  -*- lexical-binding: t; -*-

;; Author: the sleepy-repo authors
;; Version: 0.1.0
;; Package-Requires: ((emacs "28.1") (eglot "1.9"))
;; Keywords: tools, languages
;; SPDX-License-Identifier: MIT

;;; Commentary:

;; Runs `sleepy-repo lsp' through eglot for the project (the enclosing git
;; repository) of a Python, JavaScript/TypeScript, Go or Rust buffer.  Hover
;; (eldoc) shows the notes of the symbol at point with `path:line' citations.
;;
;;   M-x sleepy-repo-start    start the server for this buffer's project
;;   M-x sleepy-repo-ask      ask a question; the cited answer in *sleepy-repo*
;;   M-x sleepy-repo-refresh  refresh the notes now
;;   M-x sleepy-repo-status   modules, fresh and stale notes
;;   M-x sleepy-repo-notes    the notes of this file (eglot has no code lenses)
;;   M-x sleepy-repo-context  the notes packed for a question
;;
;; Emacs 28 needs eglot from ELPA (or Debian's `elpa-eglot'); Emacs 29+ has
;; it built in.  Setup:
;;
;;   (add-to-list 'load-path "/path/to/sleepy-repo/lsp/emacs")
;;   (require 'sleepy-repo)
;;   (sleepy-repo-eglot-setup)  ; optional: `M-x eglot' picks sleepy-repo
;;
;; Eglot runs one server per buffer.  `sleepy-repo-eglot-setup' puts
;; sleepy-repo first in `eglot-server-programs', so it replaces the usual
;; language server of those modes; without it, `M-x sleepy-repo-start' starts
;; sleepy-repo for a project on demand.

;;; Code:

(require 'cl-lib)
(require 'eglot)
(require 'jsonrpc)
(require 'project)
(require 'seq)
(require 'subr-x)

(defgroup sleepy-repo nil
  "Cited notes about a repository, written while you are idle."
  :group 'tools
  :prefix "sleepy-repo-")

(defcustom sleepy-repo-executable "sleepy-repo"
  "The sleepy-repo executable; the server is `<executable> lsp'."
  :type 'string)

(defcustom sleepy-repo-backend nil
  "The note backend sent to the server.
nil means the one in `.sleepy/config.toml'."
  :type '(choice (const :tag "From .sleepy/config.toml" nil)
                 (const "static") (const "anthropic") (const "local")))

(defcustom sleepy-repo-idle-seconds nil
  "Seconds without edits before sleep-time work.
nil means the server's default."
  :type '(choice (const :tag "Server default" nil) number))

(defcustom sleepy-repo-request-timeout 600
  "Seconds to wait for the server's answer to a command."
  :type 'number)

(defcustom sleepy-repo-major-modes
  '(python-mode (python-ts-mode :language-id "python")
    js-mode (js-ts-mode :language-id "javascript")
    typescript-mode (typescript-ts-mode :language-id "typescript")
    (tsx-ts-mode :language-id "typescriptreact")
    go-mode (go-ts-mode :language-id "go")
    rust-mode (rust-ts-mode :language-id "rust"))
  "Major modes whose buffers sleepy-repo manages.
Entries as in `eglot-server-programs': a mode, or (MODE :language-id ID)."
  :type '(repeat sexp))

(defclass sleepy-repo-server (eglot-lsp-server) ()
  :documentation "An eglot connection to `sleepy-repo lsp'.")

(cl-defmethod eglot-initialization-options ((_server sleepy-repo-server))
  "The options set in `sleepy-repo-backend' and `sleepy-repo-idle-seconds'."
  (let (options)
    (when sleepy-repo-idle-seconds
      (setq options (plist-put options :idleSeconds sleepy-repo-idle-seconds)))
    (when sleepy-repo-backend
      (setq options (plist-put options :backend sleepy-repo-backend)))
    (or options eglot--{})))

(defun sleepy-repo--contact (&optional _interactive)
  "The eglot contact: the server class and its command line."
  (list 'sleepy-repo-server sleepy-repo-executable "lsp"))

;;;###autoload
(defun sleepy-repo-eglot-setup ()
  "Make eglot use sleepy-repo for `sleepy-repo-major-modes'."
  (setq eglot-server-programs
        (cons (cons sleepy-repo-major-modes #'sleepy-repo--contact)
              (cl-remove #'sleepy-repo--contact eglot-server-programs
                         :key #'cdr))))

(defun sleepy-repo--mode-entry (mode)
  "The entry of `sleepy-repo-major-modes' for MODE, or nil."
  (cl-find-if (lambda (entry) (eq mode (if (consp entry) (car entry) entry)))
              sleepy-repo-major-modes))

(defun sleepy-repo--modes ()
  "The major-mode symbols of `sleepy-repo-major-modes'."
  (mapcar (lambda (entry) (if (consp entry) (car entry) entry))
          sleepy-repo-major-modes))

;;;###autoload
(defun sleepy-repo-start ()
  "Start sleepy-repo for the current buffer's project (its git repository)."
  (interactive)
  (let ((entry (sleepy-repo--mode-entry major-mode))
        (project (project-current)))
    (unless entry
      (user-error "sleepy-repo: %s is not in `sleepy-repo-major-modes'"
                  major-mode))
    (unless project
      (user-error "sleepy-repo: %s is not inside a git repository"
                  (or buffer-file-name (buffer-name))))
    (eglot (sleepy-repo--modes) project 'sleepy-repo-server
           (cdr (sleepy-repo--contact))
           (or (plist-get (cdr-safe entry) :language-id)
               (string-remove-suffix "-mode" (symbol-name major-mode))))))

(defun sleepy-repo--server ()
  "The sleepy-repo server of this buffer, or of the current project."
  (or (let ((server (eglot-current-server)))
        (and (cl-typep server 'sleepy-repo-server) server))
      (let ((project (project-current)))
        (and project
             (cl-find-if (lambda (s) (cl-typep s 'sleepy-repo-server))
                         (gethash project eglot--servers-by-project))))
      (user-error
       "sleepy-repo: no server for this project; M-x sleepy-repo-start")))

(defun sleepy-repo-request (method params)
  "Send METHOD with PARAMS to the sleepy-repo server; return the result."
  (jsonrpc-request (sleepy-repo--server) method params
                   :timeout sleepy-repo-request-timeout))

(defun sleepy-repo-execute (command &rest arguments)
  "Run the server's COMMAND (a `sleepy.*' id) with ARGUMENTS; return it."
  (sleepy-repo-request :workspace/executeCommand
                       (list :command command :arguments (vconcat arguments))))

(defun sleepy-repo--citation (citation)
  "CITATION (a plist with :path and lines, or a string) as `path:line'."
  (if (stringp citation)
      citation
    (let ((path (plist-get citation :path))
          (start (or (plist-get citation :start_line)
                     (plist-get citation :line)))
          (end (plist-get citation :end_line)))
      (cond ((and start end (not (equal start end)))
             (format "%s:%s-%s" path start end))
            (start (format "%s:%s" path start))
            (t (format "%s" path))))))

(defun sleepy-repo--scalar (value)
  "A JSON scalar VALUE as text."
  (pcase value
    ('nil "null")
    (:json-false "false")
    ('t "true")
    ((pred vectorp) "[]")
    (_ (format "%s" value))))

(defun sleepy-repo--nested-p (value)
  "Non-nil when VALUE is a non-empty object or array."
  (or (consp value) (and (vectorp value) (> (length value) 0))))

(defun sleepy-repo--dump (value indent)
  "VALUE (plists and vectors from jsonrpc) as `key: value' lines at INDENT."
  (let ((deeper (concat indent "  ")))
    (cond
     ((and (consp value) (keywordp (car value)))
      (mapconcat
       (lambda (pair)
         (let ((key (substring (symbol-name (car pair)) 1))
               (item (cadr pair)))
           (if (sleepy-repo--nested-p item)
               (format "%s%s:\n%s" indent key (sleepy-repo--dump item deeper))
             (format "%s%s: %s" indent key (sleepy-repo--scalar item)))))
       (seq-partition value 2) "\n"))
     ((vectorp value)
      (mapconcat
       (lambda (item)
         (if (sleepy-repo--nested-p item)
             (format "%s-\n%s" indent (sleepy-repo--dump item deeper))
           (format "%s- %s" indent (sleepy-repo--scalar item))))
       value "\n"))
     (t (concat indent (sleepy-repo--scalar value))))))

;; `:json-false' and nil are both "no" in the item flags below.
(defun sleepy-repo--true-p (value)
  "Non-nil when the JSON VALUE is true."
  (eq value t))

(defun sleepy-repo--one-line (text)
  "TEXT with runs of whitespace collapsed to one space."
  (replace-regexp-in-string "[ \t\n\r]+" " " (format "%s" (or text ""))))

(defun sleepy-repo--item (item)
  "A context or note ITEM as one line: `- path:lines · symbol (kind): text'."
  (let ((symbol (plist-get item :symbol))
        (question (plist-get item :question))
        (text (sleepy-repo--one-line (plist-get item :text))))
    (concat "- " (sleepy-repo--citation item)
            (if (stringp symbol) (concat " · " symbol) "")
            (format " (%s)" (or (plist-get item :kind) "?"))
            (if (sleepy-repo--true-p (plist-get item :generated))
                " (generated)" "")
            (if (sleepy-repo--true-p (plist-get item :stale)) " ⚠ stale" "")
            ": "
            (if (stringp question)
                (concat "Q: " (sleepy-repo--one-line question) " " text)
              text))))

(defun sleepy-repo--context (context)
  "The packed CONTEXT (a `sleepy/context' result) as markdown."
  (concat (format "## Context (%s of %s tokens)\n\n"
                  (plist-get context :tokens) (plist-get context :budget))
          (mapconcat #'sleepy-repo--item (plist-get context :items) "\n")))

(defun sleepy-repo--text-field (result)
  "The first string among RESULT's :markdown, :answer, :text, :message."
  (cl-some (lambda (key)
             (let ((v (plist-get result key))) (and (stringp v) v)))
           '(:markdown :answer :text :message)))

(defun sleepy-repo-render (result)
  "Text for a command RESULT.
A string as is; an `ask' result as its answer (or message) and the cited
context; a `sleepy/context' result as its items; a module's notes as their
items; else the result as `key: value' lines."
  (cond
   ((stringp result) result)
   ((not (and (consp result) (keywordp (car result))))
    (sleepy-repo--dump result ""))
   ((vectorp (plist-get (plist-get result :context) :items))
    (concat (or (sleepy-repo--text-field result) "") "\n\n"
            (sleepy-repo--context (plist-get result :context))))
   ((vectorp (plist-get result :items))
    (sleepy-repo--context result))
   ((vectorp (plist-get result :notes))
    (concat (format "# %s" (plist-get result :path))
            (mapconcat (lambda (note)
                         (format "\n\n## %s %s\n\n%s"
                                 (plist-get note :backend)
                                 (or (plist-get note :model) "")
                                 (mapconcat #'sleepy-repo--item
                                            (plist-get note :items) "\n")))
                       (plist-get result :notes) "")))
   ((sleepy-repo--text-field result))
   (t (sleepy-repo--dump result ""))))

(defun sleepy-repo--show (title result)
  "Show RESULT under TITLE in the *sleepy-repo* buffer; return the buffer."
  (let ((buffer (get-buffer-create "*sleepy-repo*")))
    (with-current-buffer buffer
      (let ((inhibit-read-only t))
        (erase-buffer)
        (insert "# " title "\n\n" (sleepy-repo-render result) "\n"))
      (if (fboundp 'markdown-mode) (markdown-mode) (special-mode))
      (goto-char (point-min)))
    (display-buffer buffer)
    buffer))

;;;###autoload
(defun sleepy-repo-ask (question)
  "Ask sleepy-repo QUESTION; show the answer with its citations."
  (interactive
   (list (read-string "Ask sleepy-repo: "
                      (when (use-region-p)
                        (buffer-substring-no-properties (region-beginning)
                                                        (region-end))))))
  (sleepy-repo--show question (sleepy-repo-execute "sleepy.ask" question)))

;;;###autoload
(defun sleepy-repo-refresh ()
  "Refresh the notes now (the server's `sleepy.refresh')."
  (interactive)
  (let ((result (sleepy-repo-execute "sleepy.refresh")))
    (message "sleepy-repo: %s" (string-trim (sleepy-repo-render result)))
    result))

;;;###autoload
(defun sleepy-repo-status ()
  "Show the notes' status (the server's `sleepy.status')."
  (interactive)
  (sleepy-repo--show "status" (sleepy-repo-execute "sleepy.status")))

;;;###autoload
(defun sleepy-repo-notes ()
  "Show the notes of the current file (the server's `sleepy.notes').
Eglot shows no code lenses; this is what their command shows elsewhere."
  (interactive)
  (unless buffer-file-name
    (user-error "sleepy-repo: this buffer visits no file"))
  (sleepy-repo--show
   (file-name-nondirectory buffer-file-name)
   (sleepy-repo-execute "sleepy.notes"
                        (list :uri (eglot--path-to-uri buffer-file-name)))))

;;;###autoload
(defun sleepy-repo-context (question &optional budget)
  "Show the notes packed for QUESTION in BUDGET tokens.
This is the server's `sleepy/context' request.  Interactively, a prefix
argument asks for the budget.  Returns the result."
  (interactive (list (read-string "Context for: ")
                     (when current-prefix-arg
                       (read-number "Token budget: " 1500))))
  (let ((result (sleepy-repo-request
                 :sleepy/context
                 (append (list :question question)
                         (when budget (list :budget budget))))))
    (when (called-interactively-p 'interactive)
      (sleepy-repo--show (format "context: %s" question) result))
    result))

(provide 'sleepy-repo)
;;; sleepy-repo.el ends here
