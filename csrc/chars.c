/* chars.c: the character-class table of chars.h, built once at compile time.
 * Classes follow RFC 3261 §25.1 (token, unreserved, word, LWS, the URI parts). */
#include "chars.h"

#define D SIP_C_DIGIT
#define A SIP_C_ALPHA
#define H SIP_C_HEX
#define T (SIP_C_TOKEN | SIP_C_PARAMVAL)
#define L (SIP_C_LWS | SIP_C_ADDRSTOP)
#define W SIP_C_WORD
#define US (SIP_C_USER | SIP_C_ADDRUSER)
#define PW SIP_C_PASSWORD
#define PA SIP_C_PARAM
#define HD SIP_C_HEADER
/* unreserved: allowed in every URI part */
#define U (SIP_C_UNRESERVED | US | PW | PA | HD)
/* alphanum: also hostname characters */
#define AN (U | T | W | SIP_C_HOST | SIP_C_SCHEME)

const uint32_t sip_ctab[256] = {
	['\t'] = L, ['\n'] = L, ['\r'] = L, [' '] = L,
	['!'] = T | U | W, ['"'] = W | SIP_C_LISTMARK, ['%'] = T | W, ['\''] = T | U | W,
	['('] = U | W, [')'] = U | W, ['*'] = T | U | W,
	['+'] = T | W | US | PW | PA | HD | SIP_C_SCHEME,
	['-'] = T | U | W | SIP_C_HOST | SIP_C_SCHEME,
	['.'] = T | U | W | SIP_C_HOST | SIP_C_IPV6 | SIP_C_SCHEME,
	['/'] = W | US | PA | HD, [':'] = W | PA | HD | SIP_C_IPV6 | SIP_C_PARAMVAL,
	['<'] = W | SIP_C_LISTMARK | SIP_C_ADDRBAD, ['>'] = W | SIP_C_LISTMARK,
	['?'] = W | SIP_C_USER | HD | SIP_C_ADDRBAD,
	['['] = W | PA | HD | SIP_C_PARAMVAL, [']'] = W | PA | HD | SIP_C_PARAMVAL, ['\\'] = W,
	['_'] = T | U | W, ['`'] = T | W, ['{'] = W, ['}'] = W, ['~'] = T | U | W,
	['&'] = US | PW | PA | HD, ['='] = US | PW | PA | HD, ['$'] = US | PW | PA | HD,
	[','] = SIP_C_USER | PW | SIP_C_LISTMARK | SIP_C_ADDRBAD, [';'] = SIP_C_USER | SIP_C_ADDRSTOP,
#define DG(c) [c] = D | H | AN | SIP_C_IPV6
	DG('0'), DG('1'), DG('2'), DG('3'), DG('4'), DG('5'), DG('6'), DG('7'), DG('8'), DG('9'),
#define HX(c) [c] = A | H | AN | SIP_C_IPV6
	HX('a'), HX('b'), HX('c'), HX('d'), HX('e'), HX('f'),
	HX('A'), HX('B'), HX('C'), HX('D'), HX('E'), HX('F'),
#define AL(c) [c] = A | AN
	AL('g'), AL('h'), AL('i'), AL('j'), AL('k'), AL('l'), AL('m'), AL('n'), AL('o'),
	AL('p'), AL('q'), AL('r'), AL('s'), AL('t'), AL('u'), AL('v'), AL('w'), AL('x'),
	AL('y'), AL('z'),
	AL('G'), AL('H'), AL('I'), AL('J'), AL('K'), AL('L'), AL('M'), AL('N'), AL('O'),
	AL('P'), AL('Q'), AL('R'), AL('S'), AL('T'), AL('U'), AL('V'), AL('W'), AL('X'),
	AL('Y'), AL('Z'),
};
