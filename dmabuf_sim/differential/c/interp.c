/*
 * dmabuf-sim's syscall-script interpreter for real kernels.
 *
 * Written for dmabuf_sim (issue 16).  It reads the script language of
 * dmabuf_sim/differential/script.py (docs/differential.md is the reference),
 * runs each statement with the real system call, and prints one JSON line per
 * statement: what the kernel answered (a return value, an errno, a signal with
 * its si_code and address, a digest of the bytes read, the text of a /proc
 * file).  Python renders and compares those lines; this program never judges.
 *
 * Processes: a controller parses the script and keeps the $names; every
 * process of the script ($main and each fork()ed child) is a worker that
 * executes resolved requests sent over a unix socket and answers.  A fork()
 * statement makes the worker fork itself, and the child's socket is handed
 * to the controller with SCM_RIGHTS, so workers never touch each other.
 *
 * Modes:
 *   interp --init           PID 1 in the VM's initramfs: mount /dev, /proc,
 *                           load /modules/order, answer on /dev/ttyS1,
 *                           run /script.syscalls, power off.
 *   interp --parse FILE     print each statement as parsed (tests compare
 *                           this with the Python parser).
 *   interp FILE             run FILE on the running kernel, answers on stdout.
 *
 * Build: gcc -static -O2 -I<dir of abi_gen.h> interp.c
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

struct script_const { const char *name; unsigned long long value; };
struct script_field { const char *name; int offset, size, is_signed; const char *kind; int out; };
struct script_struct { const char *request; unsigned long long value; int size, returns_fd;
		       const struct script_field *fields; };
#include "abi_gen.h"

#define MAX_LINE (1 << 20)
#define MAX_LOAD (1 << 20)
#define MAX_NODES 65536
#define MAX_KIDS 65536
#define MAX_NAMES 1024
#define MAX_STMTS 8192
#define MAX_ARGS 6
#define MAX_OUTS 8
#define MAX_PROCS 256
#define ANSWER_TIMEOUT_MS 60000

static FILE *out;  /* where answers go */

/* ------------------------------------------------------------------ errors */
static void die(const char *fmt, ...)
{
	va_list ap;
	char msg[512];
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	fprintf(out, "@dmas {\"error\": \"");
	for (char *p = msg; *p; p++) {
		if (*p == '"' || *p == '\\')
			fputc('\\', out);
		fputc(*p, out);
	}
	fprintf(out, "\"}\n");
	fflush(out);
	exit(2);
}

static void *xmalloc(size_t n)
{
	void *p = calloc(1, n ? n : 1);
	if (!p)
		die("out of memory");
	return p;
}

/* ------------------------------------------------------------------ tokens */
enum { T_END, T_NUM, T_NAME, T_IDENT, T_STR, T_CHAR, T_OP };

struct tok {
	int kind;
	const char *s;  /* into the line */
	int len;
	int col;
};

static int lineno;

static int tokenise(const char *line, struct tok *toks, int max)
{
	int n = 0;
	const char *p = line;
	while (*p) {
		if (*p == ' ' || *p == '\t' || *p == '\r') { p++; continue; }
		if (*p == '#')
			break;
		if (n >= max - 1)
			die("line %d: too many tokens", lineno);
		struct tok *t = &toks[n++];
		t->s = p;
		t->col = (int)(p - line);
		if (*p == '"' || *p == '\'') {
			char q = *p++;
			while (*p && *p != q) {
				if (*p == '\\' && p[1])
					p++;
				p++;
			}
			if (*p != q)
				die("line %d: cannot read %.12s (column %d)", lineno, t->s, t->col + 1);
			p++;
			t->kind = q == '"' ? T_STR : T_CHAR;
		} else if (*p == '$' && (isalpha((unsigned char)p[1]) || p[1] == '_')) {
			p++;
			while (isalnum((unsigned char)*p) || *p == '_')
				p++;
			t->kind = T_NAME;
		} else if (isdigit((unsigned char)*p)) {
			if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
				p += 2;
				while (isxdigit((unsigned char)*p))
					p++;
			} else {
				while (isdigit((unsigned char)*p))
					p++;
			}
			if (isalpha((unsigned char)*p) || *p == '_')
				die("line %d: cannot read %.12s (column %d)", lineno, t->s, t->col + 1);
			t->kind = T_NUM;
		} else if (isalpha((unsigned char)*p) || *p == '_') {
			while (isalnum((unsigned char)*p) || *p == '_')
				p++;
			t->kind = T_IDENT;
		} else if ((p[0] == '<' && p[1] == '<') || (p[0] == '>' && p[1] == '>')) {
			p += 2;
			t->kind = T_OP;
		} else if (strchr("()[]{},=+-*|&~?", *p)) {
			p++;
			t->kind = T_OP;
		} else {
			die("line %d: cannot read %.12s (column %d)", lineno, t->s, t->col + 1);
		}
		t->len = (int)(p - t->s);
	}
	toks[n].kind = T_END;
	toks[n].s = p;
	toks[n].len = 0;
	return n;
}

static int tok_is(const struct tok *t, const char *text)
{
	return (int)strlen(text) == t->len && !strncmp(t->s, text, t->len);
}

/* ------------------------------------------------------------------ names */
struct name { char *name; unsigned long long value; int bound; };
static struct name names[MAX_NAMES];
static int nnames;

static int name_index(const char *s, int len)
{
	for (int i = 0; i < nnames; i++)
		if ((int)strlen(names[i].name) == len && !strncmp(names[i].name, s, len))
			return i;
	if (nnames == MAX_NAMES)
		die("too many names");
	names[nnames].name = strndup(s, len);
	return nnames++;
}

/* ------------------------------------------------------------------ syntax tree */
enum { N_NUM, N_NAME, N_IDENT, N_UNARY, N_BIN, N_CALL, N_STR, N_LIT, N_FILL, N_RAMP, N_CONCAT, N_STRUCT };

struct node {
	int kind;
	char op[3];
	unsigned long long num;
	int name;        /* N_NAME */
	char *text;      /* N_IDENT, N_CALL (function), N_LIT (bytes), N_STRUCT field names */
	int len;         /* N_LIT length */
	int kids, nkids; /* into kids[] */
	char **fields;   /* N_STRUCT: field name per kid */
};

static struct node nodes[MAX_NODES];
static int nnodes;
static int kids[MAX_KIDS];
static int nkids;

static int new_node(int kind)
{
	if (nnodes == MAX_NODES)
		die("script too large");
	memset(&nodes[nnodes], 0, sizeof nodes[0]);
	nodes[nnodes].kind = kind;
	return nnodes++;
}

static int add_kids(const int *list, int n)
{
	if (nkids + n > MAX_KIDS)
		die("script too large");
	int first = nkids;
	memcpy(&kids[nkids], list, n * sizeof(int));
	nkids += n;
	return first;
}

static int lookup_const(const char *s, int len, unsigned long long *value)
{
	for (const struct script_const *c = script_consts; c->name; c++)
		if ((int)strlen(c->name) == len && !strncmp(c->name, s, len)) {
			*value = c->value;
			return 1;
		}
	return 0;
}

struct parser { struct tok *t; int pos, n; };

static struct tok *peek(struct parser *p) { return &p->t[p->pos]; }

static int at(struct parser *p, const char *op)
{
	return peek(p)->kind == T_OP && tok_is(peek(p), op);
}

static struct tok *take(struct parser *p, const char *text, int kind)
{
	struct tok *t = peek(p);
	if (t->kind == T_END)
		die("line %d: the line ends where %s belongs", lineno, text ? text : "more");
	if ((text && !tok_is(t, text)) || (kind >= 0 && t->kind != kind))
		die("line %d: expected %s, found %.*s (column %d)", lineno, text ? text : "a token",
		    t->len, t->s, t->col + 1);
	p->pos++;
	return t;
}

/* A string or char literal's body → N_STR of N_LIT / N_NAME parts. */
static int parse_string(struct tok *t, int interpolate)
{
	const char *s = t->s + 1, *end = t->s + t->len - 1;
	char *buf = xmalloc(t->len + 1);
	int blen = 0, parts[512], nparts = 0;
	while (s < end) {
		if (*s == '\\') {
			char c = s[1];
			if (c == 'x') {
				if (!isxdigit((unsigned char)s[2]) || !isxdigit((unsigned char)s[3]))
					die("line %d: \\x needs two hex digits", lineno);
				char hex[3] = {s[2], s[3], 0};
				buf[blen++] = (char)strtol(hex, NULL, 16);
				s += 4;
				continue;
			}
			static const char from[] = "ntr0\\\"'$";
			static const char to[] = {'\n', '\t', '\r', '\0', '\\', '"', '\'', '$'};
			const char *f = c ? strchr(from, c) : NULL;
			if (!f)
				die("line %d: unknown escape \\%c", lineno, c);
			buf[blen++] = to[f - from];
			s += 2;
			continue;
		}
		if (*s == '$' && interpolate && (isalpha((unsigned char)s[1]) || s[1] == '_')) {
			const char *e = s + 1;
			while (e < end && (isalnum((unsigned char)*e) || *e == '_'))
				e++;
			if (blen) {
				int lit = new_node(N_LIT);
				nodes[lit].text = xmalloc(blen);
				memcpy(nodes[lit].text, buf, blen);
				nodes[lit].len = blen;
				parts[nparts++] = lit;
				blen = 0;
			}
			int nm = new_node(N_NAME);
			nodes[nm].name = name_index(s, (int)(e - s));
			parts[nparts++] = nm;
			s = e;
			if (nparts > 500)
				die("line %d: too many interpolations", lineno);
			continue;
		}
		buf[blen++] = *s++;
	}
	if (blen || !nparts) {
		int lit = new_node(N_LIT);
		nodes[lit].text = xmalloc(blen);
		memcpy(nodes[lit].text, buf, blen);
		nodes[lit].len = blen;
		parts[nparts++] = lit;
	}
	free(buf);
	int str = new_node(N_STR);
	nodes[str].kids = add_kids(parts, nparts);
	nodes[str].nkids = nparts;
	return str;
}

static int parse_expr(struct parser *p);

static int parse_struct(struct parser *p)
{
	int vals[64], n = 0;
	char **fields = xmalloc(64 * sizeof(char *));
	take(p, "{", -1);
	if (!at(p, "}")) {
		for (;;) {
			struct tok *f = take(p, NULL, T_IDENT);
			take(p, "=", -1);
			if (n == 64)
				die("line %d: too many fields", lineno);
			fields[n] = strndup(f->s, f->len);
			vals[n++] = parse_expr(p);
			if (!at(p, ","))
				break;
			take(p, ",", -1);
		}
	}
	take(p, "}", -1);
	int st = new_node(N_STRUCT);
	nodes[st].kids = add_kids(vals, n);
	nodes[st].nkids = n;
	nodes[st].fields = fields;
	return st;
}

static int parse_primary(struct parser *p)
{
	struct tok *t = peek(p);
	int nd;
	switch (t->kind) {
	case T_END:
		die("line %d: an argument is missing at the end of the line", lineno);
		break;
	case T_NUM: {
		p->pos++;
		char tmp[64];
		snprintf(tmp, sizeof tmp, "%.*s", t->len, t->s);
		nd = new_node(N_NUM);
		errno = 0;
		nodes[nd].num = strtoull(tmp, NULL, 0);  /* 0x.., 0.. (octal), decimal: as Python */
		if (errno)
			die("line %d: number %s does not fit in 64 bits", lineno, tmp);
		return nd;
	}
	case T_CHAR: {
		p->pos++;
		int s = parse_string(t, 0);
		nd = new_node(N_NUM);
		nodes[nd].num = (unsigned char)nodes[kids[nodes[s].kids]].text[0];
		return nd;
	}
	case T_NAME:
		p->pos++;
		nd = new_node(N_NAME);
		nodes[nd].name = name_index(t->s, t->len);
		return nd;
	case T_STR:
		p->pos++;
		return parse_string(t, 1);
	case T_IDENT:
		p->pos++;
		if (at(p, "(")) {
			int args[8], n = 0;
			take(p, "(", -1);
			if (!at(p, ")")) {
				args[n++] = parse_expr(p);
				while (at(p, ",")) {
					take(p, ",", -1);
					if (n == 8)
						die("line %d: too many arguments", lineno);
					args[n++] = parse_expr(p);
				}
			}
			take(p, ")", -1);
			if (tok_is(t, "fill")) {
				if (n != 2)
					die("line %d: fill takes two arguments: fill(BYTE, COUNT)", lineno);
				nd = new_node(N_FILL);
			} else if (tok_is(t, "ramp")) {
				if (n != 3)
					die("line %d: ramp takes three arguments: ramp(START, STEP, COUNT)", lineno);
				nd = new_node(N_RAMP);
			} else if (tok_is(t, "_IO") || tok_is(t, "_IOR") || tok_is(t, "_IOW") ||
				   tok_is(t, "_IOWR")) {
				if (n != (tok_is(t, "_IO") ? 2 : 3))
					die("line %d: %.*s takes %d arguments", lineno, t->len, t->s,
					    tok_is(t, "_IO") ? 2 : 3);
				nd = new_node(N_CALL);
				nodes[nd].text = strndup(t->s, t->len);
			} else {
				die("line %d: unknown function %.*s() inside an argument", lineno, t->len, t->s);
			}
			nodes[nd].kids = add_kids(args, n);
			nodes[nd].nkids = n;
			return nd;
		}
		nd = new_node(N_IDENT);
		nodes[nd].text = strndup(t->s, t->len);
		return nd;
	case T_OP:
		if (tok_is(t, "(")) {
			p->pos++;
			nd = parse_expr(p);
			take(p, ")", -1);
			return nd;
		}
		if (tok_is(t, "{"))
			return parse_struct(p);
		break;
	}
	die("line %d: unexpected %.*s (column %d)", lineno, t->len, t->s, t->col + 1);
	return -1;
}

static int parse_unary(struct parser *p)
{
	if (at(p, "-") || at(p, "~")) {
		struct tok *t = take(p, NULL, T_OP);
		int nd = new_node(N_UNARY);
		nodes[nd].op[0] = t->s[0];
		int k = parse_unary(p);
		nodes[nd].kids = add_kids(&k, 1);
		nodes[nd].nkids = 1;
		return nd;
	}
	return parse_primary(p);
}

static const char *levels[][3] = {{"|"}, {"&"}, {"<<", ">>"}, {"+", "-"}, {"*"}};

static int parse_binary(struct parser *p, int level)
{
	if (level == 5)
		return parse_unary(p);
	int left = parse_binary(p, level + 1);
	for (;;) {
		const char *op = NULL;
		for (int i = 0; i < 3 && levels[level][i]; i++)
			if (at(p, levels[level][i]))
				op = levels[level][i];
		if (!op)
			return left;
		p->pos++;
		int right = parse_binary(p, level + 1);
		int nd = new_node(N_BIN);
		strcpy(nodes[nd].op, op);
		int two[2] = {left, right};
		nodes[nd].kids = add_kids(two, 2);
		nodes[nd].nkids = 2;
		left = nd;
	}
}

static int parse_expr(struct parser *p) { return parse_binary(p, 0); }

/* ------------------------------------------------------------------ statements */
enum {
	OP_DMABUF, OP_OPEN, OP_CLOSE, OP_DUP, OP_LSEEK, OP_READ, OP_WRITE, OP_POLL, OP_FCNTL,
	OP_MEMFD_CREATE, OP_FTRUNCATE, OP_IOCTL, OP_MMAP, OP_MUNMAP, OP_MPROTECT, OP_MREMAP,
	OP_LOAD, OP_STORE, OP_FORK, OP_EXIT, OP_MAPS, OP_FDINFO, NOPS,
	OP_REAP = 100,  /* internal: waitpid a child that exited */
};

/* argument types as in script.py's OPS: i int, s str, b bytes, a ioarg, e exporter;
 * upper case: optional */
static const struct { const char *name, *args; } ops[NOPS] = {
	{"dmabuf", "eii"}, {"open", "siI"}, {"close", "i"}, {"dup", "i"},
	{"lseek", "iii"}, {"read", "ii"}, {"write", "ib"}, {"poll", "ii"},
	{"fcntl", "iiI"}, {"memfd_create", "si"}, {"ftruncate", "ii"}, {"ioctl", "iia"},
	{"mmap", "iiiiii"}, {"munmap", "ii"}, {"mprotect", "iii"}, {"mremap", "iiiiI"},
	{"load", "ii"}, {"store", "ib"}, {"fork", ""}, {"exit", ""},
	{"maps", "i"}, {"fdinfo", "i"},
};

static const char *exporters[] = {"system_heap", "cma_heap", "udmabuf", "vgem", NULL};

struct stmt {
	int line;
	int proc;            /* name index of the process */
	int op;
	int nargs;
	int args[MAX_ARGS];
	int bind;            /* name index or -1 */
	int nouts;
	char *out_field[MAX_OUTS];
	int out_name[MAX_OUTS];
	const struct script_struct *layout;  /* ioctl with a known request */
};

static struct stmt stmts[MAX_STMTS];
static int nstmts;

static void check_idents(int nd, int allow_exporter)
{
	struct node *n = &nodes[nd];
	if (n->kind == N_IDENT) {
		unsigned long long v;
		if (allow_exporter) {
			for (const char **e = exporters; *e; e++)
				if (!strcmp(*e, n->text))
					return;
			die("line %d: argument 1 of dmabuf names the exporter", lineno);
		}
		if (!lookup_const(n->text, (int)strlen(n->text), &v))
			die("line %d: unknown constant %s", lineno, n->text);
		n->num = v;
		return;
	}
	for (int i = 0; i < n->nkids; i++)
		check_idents(kids[n->kids + i], 0);
}

static const struct script_struct *find_layout(int nd)
{
	if (nodes[nd].kind != N_IDENT)
		return NULL;
	for (const struct script_struct *s = script_structs; s->request; s++)
		if (!strcmp(s->request, nodes[nd].text))
			return s;
	return NULL;
}

static const struct script_field *find_field(const struct script_struct *s, const char *name)
{
	for (const struct script_field *f = s->fields; f->name; f++)
		if (!strcmp(f->name, name))
			return f;
	return NULL;
}

static void parse_statement(char *line)
{
	static struct tok toks[65536];
	int n = tokenise(line, toks, (int)(sizeof toks / sizeof toks[0]));
	if (!n)
		return;
	if (nstmts == MAX_STMTS)
		die("too many statements");
	struct parser p = {toks, 0, n};
	struct stmt *st = &stmts[nstmts];
	memset(st, 0, sizeof *st);
	st->line = lineno;
	st->bind = -1;
	st->proc = name_index("$main", 5);
	if (at(&p, "[")) {
		take(&p, "[", -1);
		struct tok *t = take(&p, NULL, T_NAME);
		st->proc = name_index(t->s, t->len);
		take(&p, "]", -1);
	}
	struct tok *opt = take(&p, NULL, T_IDENT);
	st->op = -1;
	for (int i = 0; i < NOPS; i++)
		if (tok_is(opt, ops[i].name))
			st->op = i;
	if (st->op < 0)
		die("line %d: unknown call %.*s()", lineno, opt->len, opt->s);
	take(&p, "(", -1);
	if (!at(&p, ")")) {
		st->args[st->nargs++] = parse_expr(&p);
		while (at(&p, ",")) {
			take(&p, ",", -1);
			if (st->nargs == MAX_ARGS)
				die("line %d: too many arguments", lineno);
			st->args[st->nargs++] = parse_expr(&p);
		}
	}
	take(&p, ")", -1);
	const char *types = ops[st->op].args;
	int required = 0;
	for (const char *c = types; *c; c++)
		required += islower((unsigned char)*c) ? 1 : 0;
	if (st->nargs < required || st->nargs > (int)strlen(types))
		die("line %d: %s takes %d arguments", lineno, ops[st->op].name, required);
	for (int i = 0; i < st->nargs; i++) {
		int nd = st->args[i];
		check_idents(nd, tolower((unsigned char)types[i]) == 'e');
		/* bytes arguments written as "a" + fill(..) parse as '+' trees: flatten */
		if (tolower((unsigned char)types[i]) == 'b' && nodes[nd].kind == N_BIN) {
			int parts[256], np = 0, stack[256], sp = 0;
			stack[sp++] = nd;
			while (sp) {
				int x = stack[--sp];
				if (nodes[x].kind == N_BIN && !strcmp(nodes[x].op, "+")) {
					stack[sp++] = kids[nodes[x].kids + 1];
					stack[sp++] = kids[nodes[x].kids];
				} else if (np < 256) {
					parts[np++] = x;
				}
				if (sp >= 254)
					die("line %d: bytes expression too long", lineno);
			}
			int c = new_node(N_CONCAT);
			nodes[c].kids = add_kids(parts, np);
			nodes[c].nkids = np;
			st->args[i] = c;
		}
	}
	if (st->op == OP_IOCTL) {
		st->layout = find_layout(st->args[1]);
		if (st->nargs == 3 && nodes[st->args[2]].kind == N_STRUCT) {
			if (!st->layout)
				die("line %d: a {struct} argument needs a request whose layout is known", lineno);
			for (int k = 0; k < nodes[st->args[2]].nkids; k++)
				if (!find_field(st->layout, nodes[st->args[2]].fields[k]))
					die("line %d: struct has no field %s", lineno, nodes[st->args[2]].fields[k]);
		}
	}
	if (at(&p, "=")) {
		take(&p, "=", -1);
		int start = p.pos;
		while (peek(&p)->kind != T_END && !at(&p, "{"))
			p.pos++;
		if (p.pos - start == 1 && toks[start].kind == T_NAME)
			st->bind = name_index(toks[start].s, toks[start].len);
		if (at(&p, "{")) {
			take(&p, "{", -1);
			for (;;) {
				struct tok *f = take(&p, NULL, T_IDENT);
				take(&p, "=", -1);
				struct tok *nm = take(&p, NULL, T_NAME);
				if (st->nouts == MAX_OUTS)
					die("line %d: too many output bindings", lineno);
				if (!st->layout || !find_field(st->layout, strndup(f->s, f->len)))
					die("line %d: %.*s is not an output field", lineno, f->len, f->s);
				st->out_field[st->nouts] = strndup(f->s, f->len);
				st->out_name[st->nouts++] = name_index(nm->s, nm->len);
				if (!at(&p, ","))
					break;
				take(&p, ",", -1);
			}
			take(&p, "}", -1);
		}
	}
	nstmts++;
}

static void parse_file(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		die("cannot open script %s: %s", path, strerror(errno));
	char *line = xmalloc(MAX_LINE);
	lineno = 0;
	while (fgets(line, MAX_LINE, f)) {
		lineno++;
		line[strcspn(line, "\n")] = 0;
		parse_statement(line);
	}
	fclose(f);
	free(line);
}

/* ------------------------------------------------------------------ evaluation */
static int unbound_name;  /* set when eval hits an unbound $name */

static int eval_int(int nd, unsigned long long *v)
{
	struct node *n = &nodes[nd];
	unsigned long long a, b;
	switch (n->kind) {
	case N_NUM:
	case N_IDENT:
		*v = n->num;
		return 0;
	case N_NAME:
		if (!names[n->name].bound) {
			unbound_name = n->name;
			return -1;
		}
		*v = names[n->name].value;
		return 0;
	case N_UNARY:
		if (eval_int(kids[n->kids], &a))
			return -1;
		*v = n->op[0] == '-' ? -a : ~a;
		return 0;
	case N_BIN:
		if (eval_int(kids[n->kids], &a) || eval_int(kids[n->kids + 1], &b))
			return -1;
		if (!strcmp(n->op, "+")) *v = a + b;
		else if (!strcmp(n->op, "-")) *v = a - b;
		else if (!strcmp(n->op, "*")) *v = a * b;
		else if (!strcmp(n->op, "|")) *v = a | b;
		else if (!strcmp(n->op, "&")) *v = a & b;
		else if (!strcmp(n->op, "<<")) *v = a << (b & 63);
		else *v = a >> (b & 63);
		return 0;
	case N_CALL: {
		unsigned long long x[3] = {0, 0, 0};
		for (int i = 0; i < n->nkids; i++)
			if (eval_int(kids[n->kids + i], &x[i]))
				return -1;
		unsigned long long dir = !strcmp(n->text, "_IO") ? 0 : !strcmp(n->text, "_IOW") ? 1 :
					 !strcmp(n->text, "_IOR") ? 2 : 3;
		*v = (dir << 30) | ((x[2] & 0x3fff) << 16) | ((x[0] & 0xff) << 8) | (x[1] & 0xff);
		return 0;
	}
	}
	die("line %d: not a number", lineno);
	return -1;
}

struct buf { unsigned char *p; size_t len, cap; };

static void buf_add(struct buf *b, const void *data, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->p = realloc(b->p, b->cap);
		if (!b->p)
			die("out of memory");
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
	b->p[b->len] = 0;
}

static int eval_bytes(int nd, struct buf *b)
{
	struct node *n = &nodes[nd];
	unsigned long long v, c;
	char num[32];
	switch (n->kind) {
	case N_LIT:
		buf_add(b, n->text, n->len);
		return 0;
	case N_NAME:  /* inside a string: the value in decimal */
		if (eval_int(nd, &v))
			return -1;
		snprintf(num, sizeof num, "%llu", v);
		buf_add(b, num, strlen(num));
		return 0;
	case N_STR:
	case N_CONCAT:
		for (int i = 0; i < n->nkids; i++)
			if (eval_bytes(kids[n->kids + i], b))
				return -1;
		return 0;
	case N_FILL:
		if (eval_int(kids[n->kids], &v) || eval_int(kids[n->kids + 1], &c))
			return -1;
		if (c > MAX_LOAD)
			c = MAX_LOAD + 1;  /* refused by the caller: more than MAX_LOAD bytes */
		for (unsigned long long i = 0; i < c; i++) {
			unsigned char byte = (unsigned char)v;
			buf_add(b, &byte, 1);
		}
		return 0;
	case N_RAMP: {
		unsigned long long step;
		if (eval_int(kids[n->kids], &v) || eval_int(kids[n->kids + 1], &step) ||
		    eval_int(kids[n->kids + 2], &c))
			return -1;
		if (c > MAX_LOAD)
			c = MAX_LOAD + 1;  /* refused by the caller */
		for (unsigned long long i = 0; i < c; i++) {
			unsigned char byte = (unsigned char)((v & 0xff) + i * (step & 0xff));
			buf_add(b, &byte, 1);
		}
		return 0;
	}
	}
	die("line %d: not bytes", lineno);
	return -1;
}

/* ------------------------------------------------------------------ digests (script.py: digest) */
static unsigned int crc32_of(const unsigned char *p, size_t n)
{
	unsigned int crc = 0xffffffffu;
	for (size_t i = 0; i < n; i++) {
		crc ^= p[i];
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0xedb88320u & -(crc & 1));
	}
	return ~crc;
}

static void digest(const unsigned char *p, size_t n, struct buf *d)
{
	char tmp[64];
	if (n <= 64) {
		buf_add(d, "hex:", 4);
		for (size_t i = 0; i < n; i++) {
			snprintf(tmp, sizeof tmp, "%02x", p[i]);
			buf_add(d, tmp, 2);
		}
		return;
	}
	int runs = 0;
	for (size_t i = 0; i < n; i++)
		if (i == 0 || p[i] != p[i - 1])
			runs++;
	if (runs > 16) {
		unsigned char step = (unsigned char)(p[1] - p[0]);
		size_t k = 1;
		while (k < n && p[k] == (unsigned char)(p[k - 1] + step))
			k++;
		if (k == n)
			snprintf(tmp, sizeof tmp, "ramp:%02x:%02x:%zu", p[0], step, n);
		else
			snprintf(tmp, sizeof tmp, "crc32:%08x:%zu", crc32_of(p, n), n);
		buf_add(d, tmp, strlen(tmp));
		return;
	}
	buf_add(d, "runs:", 5);
	size_t i = 0;
	while (i < n) {
		size_t j = i;
		while (j < n && p[j] == p[i])
			j++;
		snprintf(tmp, sizeof tmp, "%s%02x*%zu", i ? "," : "", p[i], j - i);
		buf_add(d, tmp, strlen(tmp));
		i = j;
	}
}

/* ------------------------------------------------------------------ requests and answers */
enum { K_OK, K_ERRNO, K_SIGNAL, K_SKIPPED, K_OOPS, K_UNSUPPORTED, K_HUNG };
static const char *kind_names[] = {"ok", "errno", "signal", "skipped", "oops", "unsupported", "hung"};

struct req {
	int op;
	int argkind;  /* ioctl: 0 number, 1 string, 2 struct */
	unsigned long long a[MAX_ARGS];
	int nargs;
	char exporter[16];
	unsigned int len;  /* payload: path, bytes, string or struct */
};

struct ans {
	int kind;
	unsigned long long value;
	int code;
	unsigned long long addr;
	char note[96];
	unsigned int len;  /* payload: digest, /proc text or struct bytes */
};

static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t w = write(fd, c, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

static int read_all(int fd, void *p, size_t n)
{
	char *c = p;
	while (n) {
		ssize_t r = read(fd, c, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		c += r;
		n -= (size_t)r;
	}
	return 0;
}

/* ------------------------------------------------------------------ the worker */
static sigjmp_buf fault_jmp;
static volatile sig_atomic_t fault_sig, fault_code;
static volatile unsigned long long fault_addr;

static void on_fault(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	fault_sig = sig;
	fault_code = si->si_code;
	fault_addr = (unsigned long long)(uintptr_t)si->si_addr;
	siglongjmp(fault_jmp, 1);
}

static long sys(long nr, long a, long b, long c, long d, long e, long f)
{
	return syscall(nr, a, b, c, d, e, f);
}

static void ans_errno(struct ans *a, const char *step)
{
	a->kind = K_ERRNO;
	a->value = (unsigned long long)errno;
	snprintf(a->note, sizeof a->note, "%s", step ? step : "");
}

static long put_struct(unsigned char *s, const struct script_field *f, unsigned long long v)
{
	memcpy(s + f->offset, &v, (size_t)f->size);  /* little-endian: the low bytes */
	return 0;
}

static unsigned long long get_field(const unsigned char *s, const struct script_field *f)
{
	unsigned long long v = 0;
	memcpy(&v, s + f->offset, (size_t)f->size);
	if (f->is_signed && f->size < 8 && (v >> (f->size * 8 - 1)) & 1)
		v |= ~0ULL << (f->size * 8);
	return v;
}

static const struct script_struct *layout_named(const char *request)
{
	for (const struct script_struct *s = script_structs; s->request; s++)
		if (!strcmp(s->request, request))
			return s;
	die("no layout for %s", request);
	return NULL;
}

static unsigned long long cst(const char *name)
{
	unsigned long long v;
	if (!lookup_const(name, (int)strlen(name), &v))
		die("no constant %s", name);
	return v;
}

/* dmabuf(EXPORTER, len, flags): the uapi steps of simside.make_dmabuf, in its order. */
static void make_dmabuf(const char *exporter, unsigned long long len, int flags, struct ans *a)
{
	unsigned char s[64];
	long fd, dev, memfd;
	int cloexec = (int)cst("O_CLOEXEC");
	if (!strcmp(exporter, "system_heap") || !strcmp(exporter, "cma_heap")) {
		const char *path = exporter[0] == 's' ? "/dev/dma_heap/system" : "/dev/dma_heap/reserved";
		char step[64];
		snprintf(step, sizeof step, "open %s", path);
		dev = sys(SYS_openat, AT_FDCWD, (long)path, O_RDONLY | cloexec, 0, 0, 0);
		if (dev < 0)
			return ans_errno(a, step);
		const struct script_struct *l = layout_named("DMA_HEAP_IOCTL_ALLOC");
		memset(s, 0, sizeof s);
		put_struct(s, find_field(l, "len"), len);
		put_struct(s, find_field(l, "fd_flags"), (unsigned int)flags);
		if (sys(SYS_ioctl, dev, (long)l->value, (long)s, 0, 0, 0) < 0) {
			ans_errno(a, "DMA_HEAP_IOCTL_ALLOC");
			close((int)dev);
			return;
		}
		close((int)dev);
		a->value = get_field(s, find_field(l, "fd"));
		return;
	}
	if (!strcmp(exporter, "udmabuf")) {
		memfd = sys(SYS_memfd_create, (long)"udmabuf", (long)(cst("MFD_ALLOW_SEALING") | cst("MFD_CLOEXEC")),
			    0, 0, 0, 0);
		if (memfd < 0)
			return ans_errno(a, "memfd_create");
		dev = -1;
		if (sys(SYS_ftruncate, memfd, (long)len, 0, 0, 0, 0) < 0) {
			ans_errno(a, "ftruncate");
		} else if (sys(SYS_fcntl, memfd, (long)cst("F_ADD_SEALS"), (long)cst("F_SEAL_SHRINK"), 0, 0, 0) < 0) {
			ans_errno(a, "F_ADD_SEALS");
		} else if ((dev = sys(SYS_openat, AT_FDCWD, (long)"/dev/udmabuf", O_RDWR | cloexec, 0, 0, 0)) < 0) {
			ans_errno(a, "open /dev/udmabuf");
		} else {
			const struct script_struct *l = layout_named("UDMABUF_CREATE");
			memset(s, 0, sizeof s);
			put_struct(s, find_field(l, "memfd"), (unsigned long long)memfd);
			put_struct(s, find_field(l, "flags"), (flags & cloexec) ? cst("UDMABUF_FLAGS_CLOEXEC") : 0);
			put_struct(s, find_field(l, "size"), len);
			fd = sys(SYS_ioctl, dev, (long)l->value, (long)s, 0, 0, 0);
			if (fd < 0)
				ans_errno(a, "UDMABUF_CREATE");
			else
				a->value = (unsigned long long)fd;
		}
		if (dev >= 0)
			close((int)dev);
		close((int)memfd);
		return;
	}
	/* vgem */
	dev = sys(SYS_openat, AT_FDCWD, (long)"/dev/dri/card0", O_RDWR | cloexec, 0, 0, 0);
	if (dev < 0)
		return ans_errno(a, "open /dev/dri/card0");
	const struct script_struct *cd = layout_named("DRM_IOCTL_MODE_CREATE_DUMB");
	memset(s, 0, sizeof s);
	put_struct(s, find_field(cd, "height"), (len + 4095) / 4096);
	put_struct(s, find_field(cd, "width"), 1024);
	put_struct(s, find_field(cd, "bpp"), 32);
	if (sys(SYS_ioctl, dev, (long)cd->value, (long)s, 0, 0, 0) < 0) {
		ans_errno(a, "DRM_IOCTL_MODE_CREATE_DUMB");
		close((int)dev);
		return;
	}
	unsigned long long handle = get_field(s, find_field(cd, "handle"));
	const struct script_struct *pr = layout_named("DRM_IOCTL_PRIME_HANDLE_TO_FD");
	memset(s, 0, sizeof s);
	put_struct(s, find_field(pr, "handle"), handle);
	put_struct(s, find_field(pr, "flags"), (unsigned)flags & ((unsigned)cloexec | 3u));
	if (sys(SYS_ioctl, dev, (long)pr->value, (long)s, 0, 0, 0) < 0) {
		ans_errno(a, "DRM_IOCTL_PRIME_HANDLE_TO_FD");
		close((int)dev);
		return;
	}
	close((int)dev);
	a->value = get_field(s, find_field(pr, "fd"));
}

static void read_text(const char *path, struct buf *text, struct ans *a)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ans_errno(a, NULL);
	char chunk[4096];
	ssize_t r;
	while ((r = read(fd, chunk, sizeof chunk)) > 0)
		buf_add(text, chunk, (size_t)r);
	close(fd);
}

static int ctl_fd;  /* this worker's socket to the controller */

static int send_fd(int sock, int fd, const struct ans *a)
{
	struct iovec iov = {(void *)a, sizeof *a};
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct msghdr msg = {0};
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = cbuf;
	msg.msg_controllen = sizeof cbuf;
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	return sendmsg(sock, &msg, 0) == (ssize_t)sizeof *a ? 0 : -1;
}

static void worker_loop(void);

static void do_request(const struct req *r, unsigned char *payload, struct ans *a, struct buf *data)
{
	const unsigned long long *x = r->a;
	long ret = 0;
	switch (r->op) {
	case OP_DMABUF:
		make_dmabuf(r->exporter, x[1], (int)x[2], a);
		return;
	case OP_OPEN:
		ret = sys(SYS_openat, AT_FDCWD, (long)payload, (long)(int)x[1], r->nargs > 2 ? (long)x[2] : 0, 0, 0);
		break;
	case OP_CLOSE:
		ret = sys(SYS_close, (long)(int)x[0], 0, 0, 0, 0, 0);
		break;
	case OP_DUP:
		ret = sys(SYS_dup, (long)(int)x[0], 0, 0, 0, 0, 0);
		break;
	case OP_LSEEK:
		ret = sys(SYS_lseek, (long)(int)x[0], (long)x[1], (long)(int)x[2], 0, 0, 0);
		break;
	case OP_READ: {
		size_t n = x[1] > MAX_LOAD ? MAX_LOAD : (size_t)x[1];
		unsigned char *b = xmalloc(n);
		ret = sys(SYS_read, (long)(int)x[0], (long)b, (long)n, 0, 0, 0);
		if (ret >= 0)
			digest(b, (size_t)ret, data);
		free(b);
		if (ret >= 0)
			ret = 0;
		break;
	}
	case OP_WRITE:
		ret = sys(SYS_write, (long)(int)x[0], (long)payload, (long)r->len, 0, 0, 0);
		break;
	case OP_POLL: {
		struct pollfd p = {(int)x[0], (short)x[1], 0};
		ret = poll(&p, 1, 0);
		if (ret >= 0)
			ret = p.revents & 0xffff;
		break;
	}
	case OP_FCNTL:
		ret = sys(SYS_fcntl, (long)(int)x[0], (long)(int)x[1], r->nargs > 2 ? (long)(int)x[2] : 0, 0, 0, 0);
		break;
	case OP_MEMFD_CREATE:
		ret = sys(SYS_memfd_create, (long)payload, (long)(unsigned int)x[1], 0, 0, 0, 0);
		break;
	case OP_FTRUNCATE:
		ret = sys(SYS_ftruncate, (long)(int)x[0], (long)x[1], 0, 0, 0, 0);
		break;
	case OP_IOCTL: {
		long arg = (long)x[2];
		if (r->argkind)
			arg = (long)payload;
		ret = sys(SYS_ioctl, (long)(int)x[0], (long)x[1], arg, 0, 0, 0);
		if (r->argkind == 2)  /* hand the struct back: the controller reads its outputs */
			buf_add(data, payload, r->len);
		break;
	}
	case OP_MMAP:
		ret = sys(SYS_mmap, (long)x[0], (long)x[1], (long)x[2], (long)x[3], (long)(int)x[4], (long)x[5]);
		break;
	case OP_MUNMAP:
		ret = sys(SYS_munmap, (long)x[0], (long)x[1], 0, 0, 0, 0);
		break;
	case OP_MPROTECT:
		ret = sys(SYS_mprotect, (long)x[0], (long)x[1], (long)x[2], 0, 0, 0);
		break;
	case OP_MREMAP:
		ret = sys(SYS_mremap, (long)x[0], (long)x[1], (long)x[2], (long)x[3], r->nargs > 4 ? (long)x[4] : 0, 0);
		break;
	case OP_LOAD:
	case OP_STORE: {
		size_t n = r->op == OP_LOAD ? (x[1] > MAX_LOAD ? MAX_LOAD : (size_t)x[1]) : r->len;
		unsigned char *volatile b = r->op == OP_LOAD ? xmalloc(n) : payload;
		volatile unsigned char *mem = (volatile unsigned char *)(uintptr_t)x[0];
		if (sigsetjmp(fault_jmp, 1)) {
			a->kind = K_SIGNAL;
			a->value = (unsigned long long)fault_sig;
			a->code = fault_code;
			a->addr = fault_addr;
			if (r->op == OP_LOAD)
				free(b);
			return;
		}
		for (size_t i = 0; i < n; i++) {
			if (r->op == OP_LOAD)
				b[i] = mem[i];
			else
				mem[i] = b[i];
		}
		if (r->op == OP_LOAD) {
			digest(b, n, data);
			free(b);
		}
		return;
	}
	case OP_MAPS: {
		struct buf text = {0};
		read_text("/proc/self/maps", &text, a);
		if (a->kind != K_OK)
			return;
		char *line = (char *)text.p;
		while (line && *line) {
			char *nl = strchr(line, '\n');
			if (nl)
				*nl = 0;
			unsigned long long start, end;
			if (sscanf(line, "%llx-%llx", &start, &end) == 2 && start <= x[0] && x[0] < end) {
				buf_add(data, line, strlen(line));
				break;
			}
			line = nl ? nl + 1 : NULL;
		}
		free(text.p);
		return;
	}
	case OP_FDINFO: {
		char path[64];
		snprintf(path, sizeof path, "/proc/self/fdinfo/%d", (int)x[0]);
		read_text(path, data, a);
		return;
	}
	case OP_FORK: {
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
			return ans_errno(a, "socketpair");
		pid_t pid = fork();
		if (pid < 0) {
			ans_errno(a, NULL);
			close(sv[0]);
			close(sv[1]);
			return;
		}
		if (pid == 0) {
			int high = fcntl(sv[1], F_DUPFD_CLOEXEC, 600 + (int)(getpid() % 300));
			close(sv[0]);
			close(sv[1]);
			close(ctl_fd);
			ctl_fd = high;
			worker_loop();
			_exit(0);
		}
		close(sv[1]);
		a->value = (unsigned long long)pid;
		send_fd(ctl_fd, sv[0], a);
		close(sv[0]);
		a->kind = -1;  /* already answered */
		return;
	}
	case OP_EXIT:
		write_all(ctl_fd, a, sizeof *a);
		_exit(0);
	case OP_REAP: {
		int status;
		waitpid((pid_t)x[0], &status, 0);
		return;
	}
	}
	if (ret < 0)
		ans_errno(a, NULL);
	else
		a->value = (unsigned long long)ret;
}

static void worker_loop(void)
{
	struct sigaction sa = {0};
	sa.sa_sigaction = on_fault;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
	for (;;) {
		struct req r;
		if (read_all(ctl_fd, &r, sizeof r))
			_exit(0);
		unsigned char *payload = xmalloc(r.len + 1);
		if (r.len && read_all(ctl_fd, payload, r.len))
			_exit(0);
		struct ans a = {0};
		struct buf data = {0};
		do_request(&r, payload, &a, &data);
		if (a.kind >= 0) {
			a.len = (unsigned int)data.len;
			if (write_all(ctl_fd, &a, sizeof a) || (data.len && write_all(ctl_fd, data.p, data.len)))
				_exit(0);
		}
		free(data.p);
		free(payload);
	}
}

/* ------------------------------------------------------------------ the controller */
struct proc { int name; int sock; pid_t pid; int parent; const char *gone; };
static struct proc procs[MAX_PROCS];
static int nprocs;

static struct proc *proc_named(int name)
{
	for (int i = 0; i < nprocs; i++)
		if (procs[i].name == name)
			return &procs[i];
	return NULL;
}

static void json_string(const char *s, size_t n)
{
	fputc('"', out);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\')
			fprintf(out, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			fprintf(out, "\\u%04x", c);
		else
			fputc(c, out);
	}
	fputc('"', out);
}

static void print_answer(const struct stmt *st, const struct ans *a, const unsigned char *data)
{
	fprintf(out, "@dmas {\"line\": %d, \"k\": \"%s\"", st->line, kind_names[a->kind]);
	if (a->value)
		fprintf(out, ", \"v\": %llu", a->value);
	if (a->code)
		fprintf(out, ", \"code\": %d", a->code);
	if (a->addr)
		fprintf(out, ", \"addr\": %llu", a->addr);
	if (a->note[0]) {
		fprintf(out, ", \"note\": ");
		json_string(a->note, strlen(a->note));
	}
	if (a->kind == K_OK && st->layout && a->len == (unsigned)st->layout->size) {
		fprintf(out, ", \"outs\": {");
		int first = 1;
		for (const struct script_field *f = st->layout->fields; f->name; f++) {
			if (!f->out)
				continue;
			fprintf(out, "%s\"%s\": %lld", first ? "" : ", ", f->name,
				(long long)get_field(data, f));
			first = 0;
		}
		fprintf(out, "}");
	} else if (a->len) {
		fprintf(out, ", \"data\": ");
		json_string((const char *)data, a->len);
	}
	fprintf(out, "}\n");
	fflush(out);
}

/* Wait for a worker's answer (and a passed fd for fork). 0, or -1 if it died or hung. */
static int receive(struct proc *p, struct ans *a, unsigned char **data, int *passed_fd, int *hung)
{
	struct pollfd pfd = {p->sock, POLLIN, 0};
	*hung = 0;
	if (poll(&pfd, 1, ANSWER_TIMEOUT_MS) == 0) {
		*hung = 1;
		return -1;
	}
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {a, sizeof *a};
	struct msghdr msg = {0};
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = cbuf;
	msg.msg_controllen = sizeof cbuf;
	ssize_t got = recvmsg(p->sock, &msg, MSG_CMSG_CLOEXEC);
	if (got <= 0)
		return -1;
	if (got < (ssize_t)sizeof *a && read_all(p->sock, (char *)a + got, sizeof *a - (size_t)got))
		return -1;
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	if (passed_fd && c && c->cmsg_type == SCM_RIGHTS)
		memcpy(passed_fd, CMSG_DATA(c), sizeof(int));
	*data = xmalloc(a->len + 1);
	if (a->len && read_all(p->sock, *data, a->len))
		return -1;
	return 0;
}

static int send_req(struct proc *p, const struct req *r, const void *payload)
{
	if (write_all(p->sock, r, sizeof *r))
		return -1;
	return r->len ? write_all(p->sock, payload, r->len) : 0;
}

static void run_statement(const struct stmt *st)
{
	struct ans a = {0};
	unsigned char *data = NULL;
	struct proc *p = proc_named(st->proc);
	lineno = st->line;
	if (p && p->gone) {
		a.kind = K_SKIPPED;
		snprintf(a.note, sizeof a.note, "%s %s", names[st->proc].name, p->gone);
		print_answer(st, &a, NULL);
		return;
	}
	if (!p) {
		a.kind = K_SKIPPED;
		snprintf(a.note, sizeof a.note, "%s unbound", names[st->proc].name);
		print_answer(st, &a, NULL);
		return;
	}
	struct req r = {0};
	struct buf payload = {0};
	r.op = st->op;
	r.nargs = st->nargs;
	const char *types = ops[st->op].args;
	int failed = 0;
	for (int i = 0; i < st->nargs && !failed; i++) {
		int t = tolower((unsigned char)types[i]), nd = st->args[i];
		if (t == 'e') {
			snprintf(r.exporter, sizeof r.exporter, "%s", nodes[nd].text);
		} else if (t == 'i') {
			failed = eval_int(nd, &r.a[i]);
		} else if (t == 's' || t == 'b') {
			failed = eval_bytes(nd, &payload);
			if (t == 's')
				buf_add(&payload, "", 1);  /* the NUL: strings are C strings */
		} else if (nodes[nd].kind == N_STR) {  /* ioctl: a string pointer */
			r.argkind = 1;
			failed = eval_bytes(nd, &payload);
			buf_add(&payload, "", 1);
		} else if (nodes[nd].kind == N_STRUCT) {
			r.argkind = 2;
			unsigned char s[256] = {0};
			for (int k = 0; k < nodes[nd].nkids && !failed; k++) {
				unsigned long long v;
				failed = eval_int(kids[nodes[nd].kids + k], &v);
				if (!failed)
					put_struct(s, find_field(st->layout, nodes[nd].fields[k]), v);
			}
			buf_add(&payload, s, (size_t)st->layout->size);
		} else {
			failed = eval_int(nd, &r.a[i]);
		}
	}
	if (failed) {
		a.kind = K_SKIPPED;
		snprintf(a.note, sizeof a.note, "%s unbound", names[unbound_name].name);
		print_answer(st, &a, NULL);
		free(payload.p);
		return;
	}
	if (((st->op == OP_LOAD || st->op == OP_READ) && r.a[1] > MAX_LOAD) || payload.len > MAX_LOAD) {
		a.kind = K_UNSUPPORTED;
		snprintf(a.note, sizeof a.note, "more than %d bytes in one line", MAX_LOAD);
		print_answer(st, &a, NULL);
		free(payload.p);
		return;
	}
	r.len = (unsigned int)payload.len;
	int passed = -1, hung = 0;
	if (send_req(p, &r, payload.p) || receive(p, &a, &data, st->op == OP_FORK ? &passed : NULL, &hung)) {
		memset(&a, 0, sizeof a);
		a.kind = hung ? K_HUNG : K_OOPS;
		if (hung) {
			kill(p->pid, SIGKILL);
			p->gone = "hung";
		} else {
			p->gone = "died in an oops";
		}
		snprintf(a.note, sizeof a.note, "%s", hung ? "no answer within 60 s" : "the process died");
		print_answer(st, &a, NULL);
		free(payload.p);
		free(data);
		return;
	}
	free(payload.p);
	if (st->op == OP_FORK && a.kind == K_OK) {
		if (nprocs == MAX_PROCS)
			die("too many processes");
		struct proc *c = &procs[nprocs++];
		c->name = st->bind;
		c->sock = passed;
		c->pid = (pid_t)a.value;
		c->parent = (int)(p - procs);
		p = &procs[c->parent];
	}
	if (st->op == OP_EXIT && a.kind == K_OK) {
		/* wait until the process is gone: its mm and files are released */
		char tmp;
		while (read(p->sock, &tmp, 1) > 0)
			;
		close(p->sock);
		p->gone = "has exited";
		struct proc *parent = p->parent >= 0 ? &procs[p->parent] : NULL;
		if (parent && !parent->gone) {
			struct req rr = {0};
			struct ans ra;
			unsigned char *rd = NULL;
			int h;
			rr.op = OP_REAP;
			rr.a[0] = (unsigned long long)p->pid;
			if (!send_req(parent, &rr, NULL))
				receive(parent, &ra, &rd, NULL, &h);
			free(rd);
		} else {
			int status;
			waitpid(p->pid, &status, 0);
		}
	}
	print_answer(st, &a, data);
	if (a.kind == K_OK) {
		if (st->bind >= 0) {
			names[st->bind].value = a.value;
			names[st->bind].bound = 1;
		}
		for (int i = 0; i < st->nouts; i++) {
			const struct script_field *f = find_field(st->layout, st->out_field[i]);
			if (f && a.len == (unsigned)st->layout->size) {
				names[st->out_name[i]].value = get_field(data, f);
				names[st->out_name[i]].bound = 1;
			}
		}
	}
	free(data);
}

static void start_main_worker(void)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		die("socketpair: %s", strerror(errno));
	fflush(out);
	pid_t pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		/* keep only stdin/out/err and the socket, high, so the script's fds start at 3 */
		int high = fcntl(sv[1], F_DUPFD_CLOEXEC, 900);
		for (int fd = 3; fd < 900; fd++)
			close(fd);
		ctl_fd = high;
		worker_loop();
		_exit(0);
	}
	close(sv[1]);
	procs[0].name = name_index("$main", 5);
	procs[0].sock = sv[0];
	procs[0].pid = pid;
	procs[0].parent = -1;
	nprocs = 1;
}

static void run_script(void)
{
	signal(SIGPIPE, SIG_IGN);
	start_main_worker();
	for (int i = 0; i < nstmts; i++)
		run_statement(&stmts[i]);
	for (int i = 0; i < nprocs; i++)
		if (!procs[i].gone)
			kill(procs[i].pid, SIGKILL);
	fprintf(out, "@dmas {\"end\": %d}\n", nstmts);
	fflush(out);
}

/* ------------------------------------------------------------------ --parse */
static void print_node(int nd)
{
	struct node *n = &nodes[nd];
	switch (n->kind) {
	case N_NUM:
	case N_IDENT:
		if (n->kind == N_IDENT && !n->num && !lookup_const(n->text, (int)strlen(n->text), &n->num))
			printf("%s", n->text);  /* an exporter name */
		else
			printf("%llu", n->num);
		return;
	case N_NAME:
		printf("%s", names[n->name].name);
		return;
	case N_UNARY:
		printf("(%c", n->op[0]);
		print_node(kids[n->kids]);
		printf(")");
		return;
	case N_BIN:
		printf("(");
		print_node(kids[n->kids]);
		printf(" %s ", n->op);
		print_node(kids[n->kids + 1]);
		printf(")");
		return;
	case N_CALL:
		printf("%s(", n->text);
		for (int i = 0; i < n->nkids; i++) {
			printf(i ? ", " : "");
			print_node(kids[n->kids + i]);
		}
		printf(")");
		return;
	case N_LIT:
		printf("x'");
		for (int i = 0; i < n->len; i++)
			printf("%02x", (unsigned char)n->text[i]);
		printf("'");
		return;
	case N_STR:
	case N_CONCAT:
		printf(n->kind == N_STR ? "str[" : "cat[");
		for (int i = 0; i < n->nkids; i++) {
			printf(i ? ", " : "");
			print_node(kids[n->kids + i]);
		}
		printf("]");
		return;
	case N_FILL:
	case N_RAMP:
		printf(n->kind == N_FILL ? "fill(" : "ramp(");
		for (int i = 0; i < n->nkids; i++) {
			printf(i ? ", " : "");
			print_node(kids[n->kids + i]);
		}
		printf(")");
		return;
	case N_STRUCT:
		printf("{");
		for (int i = 0; i < n->nkids; i++) {
			printf("%s%s=", i ? ", " : "", n->fields[i]);
			print_node(kids[n->kids + i]);
		}
		printf("}");
		return;
	}
}

static void print_parse(void)
{
	for (int i = 0; i < nstmts; i++) {
		struct stmt *st = &stmts[i];
		printf("%d %s %s(", st->line, names[st->proc].name, ops[st->op].name);
		for (int k = 0; k < st->nargs; k++) {
			printf(k ? ", " : "");
			print_node(st->args[k]);
		}
		printf(")");
		if (st->bind >= 0)
			printf(" = %s", names[st->bind].name);
		for (int k = 0; k < st->nouts; k++)
			printf(" %s=%s", st->out_field[k], names[st->out_name[k]].name);
		printf("\n");
	}
}

/* ------------------------------------------------------------------ --init (PID 1 in the VM) */
static void header(const char *modules_json)
{
	struct utsname u;
	uname(&u);
	const char *devs[] = {"/dev/dma_heap/system", "/dev/dma_heap/reserved", "/dev/udmabuf",
			      "/dev/dri/card0", NULL};
	fprintf(out, "@dmas {\"header\": {\"release\": ");
	json_string(u.release, strlen(u.release));
	fprintf(out, ", \"version\": ");
	json_string(u.version, strlen(u.version));
	fprintf(out, ", \"machine\": ");
	json_string(u.machine, strlen(u.machine));
	fprintf(out, ", \"page_size\": %ld, \"devices\": {", sysconf(_SC_PAGESIZE));
	for (int i = 0; devs[i]; i++) {
		struct stat sb;
		fprintf(out, "%s\"%s\": %s", i ? ", " : "", devs[i], stat(devs[i], &sb) ? "false" : "true");
	}
	fprintf(out, "}, \"modules\": %s}}\n", modules_json);
	fflush(out);
}

static void load_modules(struct buf *json)
{
	buf_add(json, "[", 1);
	FILE *order = fopen("/modules/order", "r");
	char name[256];
	int first = 1;
	while (order && fgets(name, sizeof name, order)) {
		name[strcspn(name, "\n")] = 0;
		if (!name[0])
			continue;
		char path[300], item[400];
		snprintf(path, sizeof path, "/modules/%s", name);
		struct buf image = {0};
		struct ans a = {0};
		read_text(path, &image, &a);
		long r = a.kind == K_OK ? syscall(SYS_init_module, image.p, image.len, "") : -1;
		int err = r < 0 ? (a.kind == K_OK ? errno : (int)a.value) : 0;
		snprintf(item, sizeof item, "%s{\"name\": \"%s\", \"errno\": %d}", first ? "" : ", ", name, err);
		buf_add(json, item, strlen(item));
		first = 0;
		free(image.p);
	}
	if (order)
		fclose(order);
	buf_add(json, "]", 1);
}

static void init_mode(void)
{
	mkdir("/dev", 0755);
	mkdir("/proc", 0555);
	mkdir("/sys", 0555);
	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	mount("proc", "/proc", "proc", 0, NULL);
	mount("sysfs", "/sys", "sysfs", 0, NULL);
	int tty = open("/dev/ttyS1", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (tty >= 0) {
		struct termios t;
		if (!tcgetattr(tty, &t)) {
			cfmakeraw(&t);
			tcsetattr(tty, TCSANOW, &t);
		}
		out = fdopen(tty, "w");
	}
	if (!out)
		out = stdout;
	struct buf modules = {0};
	load_modules(&modules);
	header((const char *)modules.p);
	parse_file("/script.syscalls");
	run_script();
	sync();
	reboot(RB_POWER_OFF);
	for (;;)
		pause();
}

int main(int argc, char **argv)
{
	out = stdout;
	if (argc == 2 && !strcmp(argv[1], "--init")) {
		init_mode();
		return 0;
	}
	if (getpid() == 1) {  /* started as /init with no arguments */
		init_mode();
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "--parse")) {
		parse_file(argv[2]);
		print_parse();
		return 0;
	}
	if (argc == 2) {
		prctl(PR_SET_CHILD_SUBREAPER, 1);
		parse_file(argv[1]);
		run_script();
		return 0;
	}
	fprintf(stderr, "usage: %s --init | --parse FILE | FILE\n", argv[0]);
	return 2;
}
