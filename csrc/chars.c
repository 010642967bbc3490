/* chars.c: the character-class table of chars.h, built once at compile time.
 * Classes follow RFC 3261 §25.1 (token, unreserved, word, LWS). */
#include "chars.h"

#define D SIP_C_DIGIT
#define A SIP_C_ALPHA
#define H SIP_C_HEX
#define T SIP_C_TOKEN
#define U SIP_C_UNRESERVED
#define L SIP_C_LWS
#define W SIP_C_WORD

const uint8_t sip_ctab[256] = {
	['\t'] = L, ['\n'] = L, ['\r'] = L, [' '] = L,
	['!'] = T | U | W, ['"'] = W, ['%'] = T | W, ['\''] = T | U | W,
	['('] = U | W, [')'] = U | W, ['*'] = T | U | W, ['+'] = T | W,
	['-'] = T | U | W, ['.'] = T | U | W, ['/'] = W, [':'] = W,
	['<'] = W, ['>'] = W, ['?'] = W, ['['] = W, ['\\'] = W, [']'] = W,
	['_'] = T | U | W, ['`'] = T | W, ['{'] = W, ['}'] = W, ['~'] = T | U | W,
	['0'] = D | H | T | U | W, ['1'] = D | H | T | U | W, ['2'] = D | H | T | U | W,
	['3'] = D | H | T | U | W, ['4'] = D | H | T | U | W, ['5'] = D | H | T | U | W,
	['6'] = D | H | T | U | W, ['7'] = D | H | T | U | W, ['8'] = D | H | T | U | W,
	['9'] = D | H | T | U | W,
#define HX(c) [c] = A | H | T | U | W
	HX('a'), HX('b'), HX('c'), HX('d'), HX('e'), HX('f'),
	HX('A'), HX('B'), HX('C'), HX('D'), HX('E'), HX('F'),
#define AL(c) [c] = A | T | U | W
	AL('g'), AL('h'), AL('i'), AL('j'), AL('k'), AL('l'), AL('m'), AL('n'), AL('o'),
	AL('p'), AL('q'), AL('r'), AL('s'), AL('t'), AL('u'), AL('v'), AL('w'), AL('x'),
	AL('y'), AL('z'),
	AL('G'), AL('H'), AL('I'), AL('J'), AL('K'), AL('L'), AL('M'), AL('N'), AL('O'),
	AL('P'), AL('Q'), AL('R'), AL('S'), AL('T'), AL('U'), AL('V'), AL('W'), AL('X'),
	AL('Y'), AL('Z'),
};
