from aiohttp import web


def make_yandere(emulator):
    return web.Application()


def make_konachan(emulator):
    return web.Application()
